"""Where Dask work runs: in-process threads, a local CPU cluster, one worker per GPU, or an
existing scheduler. Everything binds to loopback unless a host is given.

This module only configures execution; it knows nothing about the physics.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from typing import Any, Iterator

from .progress import ProgressLine, distributed_progress, local_progress

__all__ = ["ClusterError", "cluster_client", "compute", "describe_task", "parse_address"]


class ClusterError(RuntimeError):
    """A cluster could not be started or joined (one-line message)."""


@contextlib.contextmanager
def _children_ignore_sigint():
    """Start worker processes with SIGINT ignored (an ignored signal stays ignored across exec).

    Ctrl-C in a terminal reaches the whole process group; the workers then need not react: this process
    shuts them down, and the user reads one line instead of a traceback from each worker.
    """
    import signal

    try:
        before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _quiet_children() -> None:
    """multiprocessing's resource tracker inherits this: no leaked-semaphore warning after an interrupt."""
    hush = "ignore::UserWarning:multiprocessing.resource_tracker"
    if hush not in os.environ.get("PYTHONWARNINGS", ""):
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), hush]))


def _local_cpu(workers: int, threads: int, host: str, dashboard: str | None):
    from distributed import LocalCluster

    _quiet_children()
    with _children_ignore_sigint():
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=True,
            host=host,
            dashboard_address=dashboard,
            memory_limit="auto",
            preload=["flowtie_dask.worker_setup"],
        )


def _local_gpu(gpus: int, threads: int, host: str, dashboard: str | None):
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        raise ClusterError("--gpus needs dask-cuda and CuPy: pip install 'flowtie-dask[gpu]'") from None
    visible = ",".join(str(i) for i in range(gpus))
    try:
        # threads > 1 overlap Zarr reading/decompression (the bottleneck of a GPU worker) with GPU work
        _quiet_children()
        with _children_ignore_sigint():
            return LocalCUDACluster(CUDA_VISIBLE_DEVICES=visible, threads_per_worker=threads, host=host,
                                    dashboard_address=dashboard, preload=["flowtie_dask.worker_setup"])
    except Exception as exc:  # pynvml.NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded, CUDA errors
        name = type(exc).__name__
        if "NVML" in name or "CUDA" in name.upper() or "nvml" in str(exc).lower():
            raise ClusterError(f"no GPU found ({name}); run without --gpus to use the CPU") from None
        raise ClusterError(f"could not start a GPU cluster: {exc}") from None


def parse_address(text: str, *, option: str = "--dashboard") -> tuple[str, int]:
    """Split ``HOST:PORT`` (or ``:PORT``) and check it.

    Returns
    -------
    (host, port) : (str, int)
        Host "" when only a port is given.

    Raises
    ------
    ClusterError
        One line naming ``option`` when the text is not HOST:PORT with a port in 0–65535.
    """
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ClusterError(f"{option} {text!r} is not HOST:PORT (e.g. 127.0.0.1:8787; port 0 picks a free one)")
    return host.strip("[]"), int(port)


def _dashboard_link(link: str, dashboard: str) -> str:
    """The link on the interface the dashboard listens on (the scheduler's --host may be another one)."""
    from urllib.parse import urlsplit, urlunsplit

    host, _ = parse_address(dashboard)
    parts = urlsplit(link)
    if not host or host in ("0.0.0.0", "::"):
        return link
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _serves_dashboard(link: str) -> bool:
    """False when the scheduler's web server answers that it has no dashboard page (``dask scheduler
    --no-dashboard`` still serves /health and /metrics, and the client's link is made from a template).
    Unreachable from here (e.g. only through an SSH tunnel): True, the user may reach it."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(link, method="HEAD"), timeout=3):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code != 404
    except (OSError, ValueError):
        return True


def _check_scheduler_file(path: str) -> None:
    """One line naming the file when a scheduler file is not the JSON that ``dask scheduler`` writes."""
    import json

    try:
        with open(path) as f:
            info = json.load(f)
    except json.JSONDecodeError as exc:
        raise ClusterError(f"scheduler file {path!r} is not valid JSON (line {exc.lineno} column {exc.colno}): "
                           "give the file written by 'dask scheduler --scheduler-file', dask-mpi or dask-jobqueue") from None
    except OSError as exc:
        raise ClusterError(f"scheduler file {path!r} cannot be read: {exc.strerror}") from None
    if not isinstance(info, dict) or not isinstance(info.get("address"), str):
        raise ClusterError(f"scheduler file {path!r} has no scheduler 'address'; give the file written by "
                           "'dask scheduler --scheduler-file', dask-mpi or dask-jobqueue")


@contextlib.contextmanager
def cluster_client(
    *,
    workers: int | None = None,
    threads: int = 1,
    gpus: int = 0,
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    host: str = "127.0.0.1",
    dashboard: str | None = "127.0.0.1:8787",
    announce=print,
) -> Iterator[Any]:
    """Start or join a Dask cluster for the duration of a ``with`` block.

    Parameters
    ----------
    workers : int, optional
        Worker processes of a local CPU cluster (default: the number of cores). ``0`` runs in
        this process on Dask's threaded scheduler (no dashboard) and yields None.
    threads : int
        Threads per worker process.
    gpus : int
        When > 0, one worker per GPU through ``dask_cuda.LocalCUDACluster``.
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``) to join instead.
    scheduler_file : str, optional
        Scheduler file written by ``dask scheduler --scheduler-file`` / dask-mpi / dask-jobqueue.
    host : str
        Interface to bind local clusters to (loopback by default).
    dashboard : str or None
        Dashboard address of a local cluster; None disables it.
    announce : callable
        Receives one line with the dashboard link (default ``print``).

    Yields
    ------
    distributed.Client or None
    """
    if sum(bool(x) for x in (gpus, scheduler, scheduler_file)) > 1:
        raise ClusterError("give only one of --gpus, --scheduler and --scheduler-file")
    if gpus and gpus < 0:
        raise ClusterError(f"--gpus must be ≥ 0, got {gpus}")
    if dashboard is not None:
        parse_address(dashboard)
    if scheduler is None and scheduler_file is None and not gpus and workers == 0:
        yield None
        return
    from distributed import Client

    cluster = None
    try:
        if scheduler_file is not None:
            if not os.path.exists(scheduler_file):
                raise ClusterError(f"scheduler file {scheduler_file!r} does not exist")
            _check_scheduler_file(scheduler_file)
            client = Client(scheduler_file=scheduler_file, timeout="20s")
        elif scheduler is not None:
            client = Client(scheduler, timeout="20s")
        else:
            n = workers if workers is not None else (os.cpu_count() or 1)
            if n < 0 or threads < 1:
                raise ClusterError(f"--workers must be ≥ 0 and --threads ≥ 1, got {workers} and {threads}")
            cluster = _local_gpu(gpus, threads, host, dashboard) if gpus else _local_cpu(n, threads, host, dashboard)
            client = Client(cluster)
    except ClusterError:
        raise
    except OSError as exc:
        raise ClusterError(f"could not reach the Dask scheduler: {exc}") from None
    try:
        if announce is not None and dashboard is not None:
            link = getattr(client, "dashboard_link", None)
            if link and cluster is None and not _serves_dashboard(link):
                link = None
            if link and cluster is not None:
                link = _dashboard_link(link, dashboard)
            if link:
                announce(f"Dask dashboard: {link}")
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def compute(*collections: Any, client: Any = None, progress: bool = True, label: str = "") -> tuple:
    """Compute Dask collections with a progress bar on the terminal.

    Parameters
    ----------
    *collections : dask collections or Delayed
    client : distributed.Client or None or "inline"
        None runs on the in-process threaded scheduler; ``"inline"`` runs every task in this thread, one
        after the other (Dask's synchronous scheduler: a debugger and a profiler see plain calls).
    progress : bool
        Show progress on stderr (:class:`flowtie_dask.progress.ProgressLine`: tiles done / total and an
        ETA; one line every few seconds when stderr is not a terminal).
    label : str
        What the progress line names (e.g. the method).

    Returns
    -------
    tuple
        The computed results, in order.
    """
    import dask

    if isinstance(client, str) and client == "inline":
        return dask.compute(*collections, scheduler="synchronous")
    if client is None:  # named: a distributed Client made elsewhere in the process would otherwise take over
        if progress:
            with local_progress(ProgressLine(label or "computing", out=sys.stderr)):
                return dask.compute(*collections, scheduler="threads")
        return dask.compute(*collections, scheduler="threads")
    from distributed.scheduler import KilledWorker

    futures = client.compute(list(collections))
    try:
        if progress:
            distributed_progress(futures, client, ProgressLine(label or "computing", out=sys.stderr))
        return tuple(client.gather(futures))
    except KilledWorker as exc:
        whole = "whole-" in str(exc.task[0] if isinstance(exc.task, tuple) else exc.task)
        remedy = ("run it without --workers (in this process, with all its memory), or on a worker with more memory"
                  if whole else "use smaller tiles (--tile-size), fewer threads per worker, or more memory per worker")
        raise ClusterError(
            f"Dask workers died {exc.allowed_failures + 1} times running task {describe_task(exc.task)} "
            f"(most likely out of memory, see the worker logs): {remedy}") from None
    finally:
        with contextlib.suppress(Exception):
            client.cancel(futures)


def describe_task(key: Any) -> str:
    """A Dask task key as a user reads it: ``METHOD-tile-X-Y-…`` keys name the tile's first scan position."""
    name = key[0] if isinstance(key, tuple) else key
    name = str(name)
    m = re.match(r"^(?:(.+?)-)?(tile|reduce|field|project)-(\d+)-(\d+)-", name)
    if m:
        what = {"tile": "tile", "reduce": "tile", "field": "field of the tile",
                "project": "projection of the tile"}[m[2]]
        by = f" of method {m[1]}" if m[1] else ""
        return f"{name!r} ({what}{by} starting at scan position Rx={m[3]}, Ry={m[4]})"
    if "whole-" in name:
        return f"{name!r} (a whole-scan method on all scan positions at once)"
    return repr(name)

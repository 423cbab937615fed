"""Command-line options shared by several commands."""

from __future__ import annotations

import argparse

from ..backend import cupy_available
from ..cluster import ClusterError, parse_address
from ..pairs import pair as _pair


def add_command(sub, name: str, run, *, help: str, description: str,
                defaults_in_help: bool = False) -> argparse.ArgumentParser:
    """Add the sub-command ``name`` to ``sub`` (the sub-parsers of the main parser) and return its parser.

    ``run(args)`` is what the main entry point calls with the parsed arguments. ``description`` is prose whose
    line breaks and indents are folded into single spaces (so it can be written as a triple-quoted block);
    ``defaults_in_help`` shows each option's default in ``--help``.
    """
    extra = {"formatter_class": argparse.ArgumentDefaultsHelpFormatter} if defaults_in_help else {}
    p = sub.add_parser(name, help=help, description=" ".join(description.split()), **extra)
    p.set_defaults(run=run)
    return p


def positive_int(text: str, *, least: int = 1) -> int:
    """argparse type: an integer ≥ ``least`` (default 1)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < least:
        raise argparse.ArgumentTypeError(f"{v} must be ≥ {least}")
    return v


def nonnegative_int(text: str) -> int:
    """argparse type: an integer ≥ 0."""
    return positive_int(text, least=0)


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{v} must be > 0")
    return v


def address(text: str) -> str:
    """argparse type: ``HOST:PORT`` with a port in 0–65535."""
    try:
        parse_address(text)
    except ClusterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def pair(values, *, option: str):
    """One or two values of an ``nargs="+"`` option as a pair (one value serves both axes).

    :func:`flowtie_dask.pairs.pair` reads the values (kept as argparse typed them); this names the flag.

    Raises
    ------
    ValueError
        Naming ``option`` when more than two values are given.
    """
    if values is None:
        return None
    try:
        return _pair(values, name=option, convert=None)
    except ValueError:
        if isinstance(values, (list, tuple)) and len(values) > 2:
            raise ValueError(f"{option} takes one or two values (along Rx and Ry), got {len(values)}: "
                             f"{' '.join(str(v) for v in values)}") from None
        raise


def add_cluster_options(p: argparse.ArgumentParser, *, default_workers: str = "all cores") -> None:
    """--workers/--threads/--gpus/--scheduler/--scheduler-file/--dashboard/--no-progress."""
    g = p.add_argument_group("execution (Dask)")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help=f"worker processes of a local CPU cluster (default: {default_workers}); "
                        "0 runs in this process with threads and no dashboard")
    g.add_argument("--threads", type=positive_int, default=1, metavar="N",
                   help="threads per worker (default: 1); with --gpus, threads per GPU worker, which overlap "
                        "reading Zarr with GPU work")
    g.add_argument("--gpus", type=nonnegative_int, default=0, metavar="N",
                   help="one worker per GPU through dask-cuda (needs the [gpu] extra); 0 = CPU only")
    g.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="array backend inside the tasks; auto: gpu with --gpus, else cpu. Give gpu with "
                        "--scheduler/--scheduler-file when the workers are 'dask cuda worker' processes")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="join a running Dask scheduler, e.g. tcp://10.0.0.5:8786")
    g.add_argument("--scheduler-file", default=None, metavar="FILE",
                   help="join the scheduler described by this file (dask-mpi, dask-jobqueue, SLURM)")
    g.add_argument("--dashboard", default="127.0.0.1:8787", metavar="HOST:PORT", type=address,
                   help="dashboard address of a local cluster (default: 127.0.0.1:8787, loopback only)")
    g.add_argument("--host", default="127.0.0.1",
                   help="interface local workers and scheduler bind to (default: loopback)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def device_of(args: argparse.Namespace) -> str:
    """"cpu" or "gpu" from --device (auto: gpu exactly when --gpus N > 0); ValueError for gpu in this
    process without CuPy and a GPU (on joined workers the workers' own GPUs count, not this machine's)."""
    device = getattr(args, "device", "auto")
    if device == "auto":
        return "gpu" if args.gpus else "cpu"
    if device == "gpu" and not (args.gpus or args.scheduler or args.scheduler_file):
        if not cupy_available():  # the tasks run here: say so now, not from inside the first task
            raise ValueError("--device gpu: no CuPy with a usable NVIDIA GPU in this process; install "
                             "'flowtie-dask[gpu]' on a GPU machine, or use --device cpu")
    return device


def cluster_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of :func:`flowtie_dask.cluster.cluster_client` from parsed options."""
    return dict(workers=args.workers, threads=args.threads, gpus=args.gpus, scheduler=args.scheduler,
                scheduler_file=args.scheduler_file, host=args.host, dashboard=args.dashboard)

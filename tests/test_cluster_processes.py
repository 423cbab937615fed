"""A cluster as users start one by hand or in a batch job: ``dask scheduler --scheduler-file F`` and two
``dask worker`` processes on loopback (Dask's own command-line tools, separate processes), then
``flowtie-dask reconstruct --scheduler-file F``. The result equals the in-process one."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from flowtie_dask.cli.main import main
from flowtie_dask.results import open_result


def _dask_cli() -> list[str]:
    exe = shutil.which("dask", path=os.path.dirname(sys.executable)) or shutil.which("dask")
    return [exe] if exe else [sys.executable, "-m", "distributed.cli.dask_spec"]


def _wait_for(predicate, what: str, timeout: float = 60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def scan(gaas16):
    return gaas16


@pytest.fixture
def dask_cluster(tmp_path):
    """A scheduler and two single-threaded workers started with ``dask``'s command line, all on 127.0.0.1."""
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    logs = [open(tmp_path / name, "w") for name in ("scheduler.log", "worker-0.log", "worker-1.log")]
    procs = [subprocess.Popen([*_dask_cli(), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(sched_file)], stdout=logs[0], stderr=subprocess.STDOUT,
                              env=env)]
    try:
        _wait_for(lambda: sched_file.exists() and sched_file.stat().st_size > 0, "the scheduler file")
        for i in (0, 1):
            procs.append(subprocess.Popen(
                [*_dask_cli(), "worker", "--scheduler-file", str(sched_file), "--host", "127.0.0.1",
                 "--nthreads", "1", "--nworkers", "1", "--name", f"w{i}", "--no-dashboard",
                 "--preload", "flowtie_dask.worker_setup"], stdout=logs[i + 1], stderr=subprocess.STDOUT, env=env))
        from distributed import Client

        with Client(scheduler_file=str(sched_file), timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
            workers = client.scheduler_info()["workers"]
        yield sched_file, workers
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs:
            f.close()


def test_reconstruct_on_workers_started_by_dask_cli_equals_in_process(scan, dask_cluster, tmp_path, capsys):
    sched_file, workers = dask_cluster
    address = json.loads(sched_file.read_text())["address"]
    assert address.startswith("tcp://127.0.0.1:")
    assert len(workers) == 2 and all(w.startswith("tcp://127.0.0.1:") for w in workers)
    local, remote = tmp_path / "local.zarr", tmp_path / "remote.zarr"
    common = ["--method", "tie", "--tile-size", "8", "--halo", "4", "--no-progress"]
    assert main(["reconstruct", str(scan), "--out", str(local), "--workers", "0", *common]) == 0
    capsys.readouterr()
    assert main(["reconstruct", str(scan), "--out", str(remote), "--scheduler-file", str(sched_file), *common]) == 0
    a, b = open_result(str(local)), open_result(str(remote))
    assert a.attrs["n_tiles"] == b.attrs["n_tiles"] == 4
    np.testing.assert_allclose(b.phase, a.phase, rtol=0, atol=1e-6)
    # the tiles ran on both worker processes (none in this one: it ran nothing)
    from distributed import Client

    with Client(scheduler_file=str(sched_file), timeout="30s") as client:
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert sorted(executed) == sorted(workers)
    assert all(n > 0 for n in executed.values()), executed
    # the scheduler was started without a dashboard: no link that leads nowhere is printed
    assert "dashboard" not in capsys.readouterr().err.lower()

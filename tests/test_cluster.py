import importlib.util
import sys

import dask.array as da
import numpy as np
import pytest

from flowtie_dask.cluster import ClusterError, cluster_client, compute


def test_zero_workers_runs_in_process():
    with cluster_client(workers=0) as client:
        assert client is None
        (x,) = compute(da.ones((4, 4), chunks=2).sum(), client=client, progress=False)
    assert x == 16


def test_local_cluster_binds_to_loopback_and_computes():
    lines = []
    with cluster_client(workers=1, threads=1, dashboard=None, announce=lines.append) as client:
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        for addr in client.scheduler_info()["workers"]:
            assert addr.startswith("tcp://127.0.0.1:")
        (x,) = compute(da.arange(10, chunks=3).sum(), client=client, progress=False)
        # the preload set the allocator's thresholds in the worker (Dask's nanny turns the adaptive ones off)
        tuned = client.run(lambda: __import__("flowtie_dask.worker_setup", fromlist=["TUNED"]).TUNED)
    assert x == 45
    if sys.platform.startswith("linux"):
        assert list(tuned.values()) == [True]


def test_joining_an_existing_scheduler_by_address_and_file(tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as lc:
        with cluster_client(scheduler=lc.scheduler_address, dashboard=None) as client:
            (x,) = compute(da.ones(5, chunks=2).sum(), client=client, progress=False)
            assert x == 5
        f = tmp_path / "sched.json"
        import json

        f.write_text(json.dumps({"address": lc.scheduler_address}))
        with cluster_client(scheduler_file=str(f), dashboard=None) as client:
            assert np.isclose(compute(da.ones(3, chunks=1).sum(), client=client, progress=False)[0], 3)


def test_conflicting_options_and_missing_file():
    with pytest.raises(ClusterError, match="only one of"):
        with cluster_client(gpus=1, scheduler="tcp://127.0.0.1:1"):
            pass
    with pytest.raises(ClusterError, match="does not exist"):
        with cluster_client(scheduler_file="/nonexistent/s.json"):
            pass


@pytest.mark.skipif(importlib.util.find_spec("dask_cuda") is not None, reason="dask-cuda is installed here")
def test_gpus_without_dask_cuda_says_what_to_install():
    with pytest.raises(ClusterError, match=r"flowtie-dask\[gpu\]"):
        with cluster_client(gpus=1):
            pass


def test_gpu_cluster_gets_the_threads_and_reports_a_missing_driver(monkeypatch):
    """--gpus N --threads T starts LocalCUDACluster with T threads per GPU worker on loopback; without an
    NVIDIA driver (what pynvml raises then) the user reads "no GPU found"."""
    import sys
    import types

    seen = {}

    class NVMLError_LibraryNotFound(Exception):  # noqa: N801 (pynvml's name)
        pass

    def fake_cluster(**kwargs):
        seen.update(kwargs)
        raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "dask_cuda", types.SimpleNamespace(LocalCUDACluster=fake_cluster))
    with pytest.raises(ClusterError, match="no GPU found"):
        with cluster_client(gpus=2, threads=4):
            pass
    assert seen["threads_per_worker"] == 4 and seen["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert seen["host"] == "127.0.0.1"

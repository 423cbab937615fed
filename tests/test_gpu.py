"""GPU paths (CuPy kernels, dask-cuda cluster). Skipped with a reason on machines without a GPU."""

import importlib.util

import numpy as np
import pytest

from tests.conftest import requires_gpu, weak_object_series


@requires_gpu
def test_reconstruct_tile_on_cupy_equals_numpy():
    import cupy as cp

    from flowtie_dask.reconstruct import reconstruct_tile

    inten, _, _, g = weak_object_series(32, 0.25)
    kw = dict(xs=range(4, 28), ys=range(4, 28), interior=(slice(4, 28), slice(4, 28)), periodic=True,
              boundary="mirror")
    off_c, num_c, ill_c = reconstruct_tile(inten, g, **kw)
    off_g, num_g, ill_g = reconstruct_tile(cp.asarray(inten), g, **kw)
    assert off_c == off_g
    np.testing.assert_allclose(cp.asnumpy(ill_g), ill_c, rtol=1e-5)
    np.testing.assert_allclose(cp.asnumpy(num_g), num_c, rtol=1e-4, atol=1e-6 * np.abs(num_c).max())


@requires_gpu
@pytest.mark.skipif(importlib.util.find_spec("dask_cuda") is None, reason="dask-cuda (the [gpu] extra) is not installed")
def test_local_cuda_cluster_runs_the_pipeline(tmp_path):
    from flowtie_dask.cluster import cluster_client
    from flowtie_dask.methods import get_method
    from flowtie_dask.runner import reconstruct
    from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store

    path = simulate_to_store(SimulationParameters(material="GaAs", lateral_cells=1, scan_pixels=16, detector_pixels=24,
                                                  gpts=32), str(tmp_path / "g.zarr"), progress=False)
    cpu = reconstruct(path, get_method("tie"), tile_size=8, halo=4, progress=False)
    with cluster_client(gpus=1, dashboard=None, announce=None) as client:
        gpu = reconstruct(path, get_method("tie"), tile_size=8, halo=4, client=client, progress=False, device="gpu")
    d = np.angle(np.exp(1j * (gpu.phase - cpu.phase)))
    assert np.mean((d - d.mean()) ** 2) < 1e-8

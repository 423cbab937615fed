import dask.array as da
import numpy as np
import pytest
import torch

from flowtie_dask import backend
from tests.conftest import requires_gpu


def test_numpy_and_dask_meta_dispatch_to_numpy():
    x = np.zeros((4, 4))
    assert backend.get_array_module(x) is np
    assert backend.get_array_module(da.from_array(x, chunks=2)) is np
    assert backend.get_array_module([1, 2]) is np
    assert backend.get_array_module(device="cpu") is np


def test_unknown_device_is_rejected():
    with pytest.raises(ValueError, match="unknown device"):
        backend.get_array_module(device="tpu")


@pytest.mark.skipif(backend.cupy_available(), reason="this machine has a GPU")
def test_gpu_device_without_gpu_says_so():
    with pytest.raises(RuntimeError, match="no GPU found"):
        backend.get_array_module(device="gpu")


def test_fft2_matches_numpy_and_keeps_single_precision(rng):
    x = (rng.standard_normal((3, 8, 6)) + 1j * rng.standard_normal((3, 8, 6))).astype(np.complex64)
    y = backend.fft2(x)
    assert y.dtype == np.complex64
    np.testing.assert_allclose(y, np.fft.fft2(x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(backend.ifft2(y), x, rtol=1e-4, atol=1e-5)


def test_torch_exchange_shares_memory():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = backend.to_torch(x)
    t[0, 0] = 42.0
    assert x[0, 0] == 42.0
    back = backend.from_torch(torch.ones(2, 2))
    assert isinstance(back, np.ndarray) and back.sum() == 4


@requires_gpu
def test_cupy_dispatch_fft_and_dlpack_roundtrip():
    import cupy as cp

    x = cp.asarray(np.random.default_rng(0).standard_normal((2, 16, 16)).astype(np.complex64))
    assert backend.get_array_module(x) is cp
    assert backend.get_array_module(da.from_array(x, chunks=1)) is cp
    np.testing.assert_allclose(backend.asnumpy(backend.fft2(x)), np.fft.fft2(backend.asnumpy(x)), rtol=1e-3, atol=1e-3)
    t = backend.to_torch(x)
    assert t.is_cuda
    t[0, 0, 0] = 7
    assert complex(x[0, 0, 0]) == 7
    assert backend.from_torch(t).data.ptr == x.data.ptr

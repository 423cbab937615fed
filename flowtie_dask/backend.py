"""Array-module and FFT dispatch (NumPy on the CPU, CuPy on a GPU).

Every kernel in the package asks this module for its array namespace, chosen
from the input array, so one kernel runs unchanged on NumPy, on CuPy and inside
``dask.array.map_blocks`` (where the block is a plain NumPy/CuPy array). Dask
arrays are dispatched on their ``_meta``. Torch tensors exchange memory with
CuPy/NumPy through DLPack (:func:`to_torch`, :func:`from_torch`).

This module never imports dask or zarr.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

import numpy as np

__all__ = [
    "cupy_available",
    "get_array_module",
    "get_fft_module",
    "asnumpy",
    "fft2",
    "ifft2",
    "fftfreq",
    "to_torch",
    "from_torch",
    "available_memory",
    "MEMORY_HEADROOM",
    "require_memory",
]


def _try_cupy() -> ModuleType | None:
    try:
        return importlib.import_module("cupy")
    except Exception:  # ImportError, or a CUDA runtime error at import time
        return None


def cupy_available() -> bool:
    """Return True when CuPy imports *and* at least one CUDA device is visible."""
    cp = _try_cupy()
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def get_array_module(x: Any = None, *, device: str | None = None) -> ModuleType:
    """Return ``numpy`` or ``cupy`` for an array (or a device name).

    Parameters
    ----------
    x : array-like, optional
        A NumPy array, a CuPy array, or a dask array (dispatched on its
        ``_meta``). Anything else (lists, scalars, None) gives NumPy.
    device : {"cpu", "gpu", "cuda"}, optional
        Pick by name instead of by array. ``"gpu"`` raises ``RuntimeError``
        when CuPy or a GPU is missing.

    Returns
    -------
    module
        ``numpy`` or ``cupy``.
    """
    if device is not None:
        if device == "cpu":
            return np
        if device in ("gpu", "cuda"):
            if not cupy_available():
                raise RuntimeError(
                    "no GPU found: CuPy or a CUDA device is missing; install the [gpu] extra "
                    "on a machine with an NVIDIA GPU or use device='cpu'"
                )
            return _try_cupy()
        raise ValueError(f"unknown device {device!r}: use 'cpu' or 'gpu'")
    meta = getattr(x, "_meta", None)
    if meta is not None:  # dask array
        x = meta
    mod = type(x).__module__.split(".")[0]
    if mod == "cupy":
        return _try_cupy()
    return np


def get_fft_module(xp: ModuleType) -> ModuleType:
    """Return the FFT namespace for an array module.

    ``scipy.fft`` for NumPy (it releases the GIL, so Dask threads run FFTs in
    parallel, and keeps complex64 as complex64), ``cupyx.scipy.fft`` for CuPy.
    """
    if xp is np:
        import scipy.fft

        return scipy.fft
    return importlib.import_module("cupyx.scipy.fft")


def fft2(x: Any, axes: tuple[int, int] = (-2, -1)) -> Any:
    """Forward 2D FFT over ``axes`` (numpy sign convention, no normalisation).

    Parameters
    ----------
    x : ndarray, shape (..., Nx, Ny)
        Complex (or real) array on NumPy or CuPy.

    Returns
    -------
    ndarray, shape (..., Nx, Ny)
        ``sum_r x(r) exp(-2 pi i q.r)``, same array module, complex64 for
        float32/complex64 input.
    """
    xp = get_array_module(x)
    return get_fft_module(xp).fft2(x, axes=axes)


def ifft2(x: Any, axes: tuple[int, int] = (-2, -1)) -> Any:
    """Inverse 2D FFT over ``axes`` (numpy convention: includes the 1/N factor).

    Parameters
    ----------
    x : ndarray, shape (..., Nx, Ny)

    Returns
    -------
    ndarray, shape (..., Nx, Ny)
    """
    xp = get_array_module(x)
    return get_fft_module(xp).ifft2(x, axes=axes)


def fftfreq(n: int, d: float, xp: ModuleType = np) -> Any:
    """Spatial frequencies of an FFT grid in 1/Å (no 2π), like ``numpy.fft.fftfreq``.

    Parameters
    ----------
    n : int
        Number of samples.
    d : float
        Sample spacing in Å.
    xp : module
        ``numpy`` or ``cupy``.

    Returns
    -------
    ndarray, shape (n,)
        Frequencies in 1/Å, float64.
    """
    return xp.fft.fftfreq(n, d=d)


def asnumpy(x: Any) -> np.ndarray:
    """Return a host NumPy copy (no copy for NumPy input) of a NumPy/CuPy array."""
    if get_array_module(x) is np:
        return np.asarray(x)
    return x.get()


def to_torch(x: Any):
    """Share a NumPy/CuPy array with torch without a copy (DLPack for CuPy).

    Parameters
    ----------
    x : ndarray
        NumPy (CPU tensor) or CuPy (CUDA tensor on the same device) array.

    Returns
    -------
    torch.Tensor
        A tensor viewing the same memory.
    """
    import torch

    if get_array_module(x) is np:
        return torch.from_numpy(np.ascontiguousarray(x))
    return torch.from_dlpack(x)


def from_torch(t: Any) -> Any:
    """Share a torch tensor with NumPy (CPU) or CuPy (CUDA) without a copy.

    Parameters
    ----------
    t : torch.Tensor
        Detached tensor.

    Returns
    -------
    ndarray
        NumPy array for a CPU tensor, CuPy array (via DLPack) for a CUDA tensor.
    """
    t = t.detach()
    if t.device.type == "cpu":
        return t.numpy()
    cp = _try_cupy()
    if cp is None:
        raise RuntimeError("a CUDA tensor needs CuPy to cross into array code; install the [gpu] extra")
    return cp.from_dlpack(t)


def available_memory(device: str = "cpu") -> int:
    """Bytes a run may allocate now.

    Parameters
    ----------
    device : {"cpu", "cuda"}
        ``"cpu"``: ``MemAvailable`` of /proc/meminfo (or free physical pages from ``os.sysconf``);
        ``"cuda"``: free memory of the current GPU (``torch.cuda.mem_get_info``).

    Returns
    -------
    int
        Bytes.
    """
    if device in ("cuda", "gpu"):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("no GPU found: torch sees no CUDA device; use device='cpu' "
                               "(or install a CUDA build of torch on a machine with an NVIDIA GPU)")
        return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - exotic platforms
        return 2**62


#: Fraction of the available memory a run may plan to use.
MEMORY_HEADROOM = 0.7


def require_memory(need: int, *, device: str = "cpu", what: str, instead: str, limit: int | None = None) -> None:
    """Raise a one-line ``ValueError`` when ``need`` bytes exceed :data:`MEMORY_HEADROOM` of
    :func:`available_memory` (checked before anything is allocated).

    Parameters
    ----------
    need : int
        Bytes the work needs.
    device : {"cpu", "cuda", "gpu"}
    what : str
        What needs it (the start of the message, e.g. ``"gradient descent on 4096 patterns"``).
    instead : str
        What to do instead (the end of the message).
    limit : int, optional
        A cap on what may be used here (e.g. a Dask worker's memory limit), bytes.
    """
    have = available_memory(device)
    if limit is not None:
        have = min(have, int(limit))
    if need > MEMORY_HEADROOM * have:
        where = "GPU" if device in ("cuda", "gpu") else "host"
        raise ValueError(f"{what} needs {need / 2**30:.1f} GiB, more than the {have / 2**30:.1f} GiB available "
                         f"({where}, {MEMORY_HEADROOM:.0%} usable); {instead}")

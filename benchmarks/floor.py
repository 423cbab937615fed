"""The floor every per-pattern phase method pays, shared by the benchmarks: reading the three scans of a
block of scan positions once (``StoreHandle.read_block``: decompress + CRC check + value checks) plus one
batched FFT over the detector axes and two over the scan axes (forward and inverse) of a complex64 array of
one scan's size (``scipy.fft``, one thread)."""

import time

import numpy as np


def floor_block(handle, xs, ys) -> float:
    """Seconds of the floor for scan positions ``xs`` × ``ys`` (lists of indices) of ``handle``'s store."""
    import scipy.fft

    t0 = time.perf_counter()
    block = handle.read_block(list(xs), list(ys))  # (3, len(xs), len(ys), Qx, Qy) float32
    a = block[1].astype(np.complex64)
    scipy.fft.fft2(a, axes=(-2, -1))
    scipy.fft.ifft2(scipy.fft.fft2(a, axes=(0, 1)), axes=(0, 1))
    return time.perf_counter() - t0

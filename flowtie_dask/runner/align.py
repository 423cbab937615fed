"""The three scans on one grid: each scan resampled onto the focus scan's positions by the drift recorded in
the store (``ScanMetadata.scan_drift``, from ``flowtie-dask calibrate``), tile by tile.

Scan position (i, j) of scan s sees the specimen at focus-scan position (i, j) + d_s (d_s in scan steps), so
the scan on the focus grid is I_s(i − d_s): a shift by +d_s over the two scan axes, the same for every
detector pixel. It is a cubic B-spline shift (local: a tile read with a margin of ⌈|d|⌉ + 10 positions gives the
whole scan's values to float32 round-off; no wrap-around ringing as with a Fourier shift on a non-periodic
tile).
Positions whose shifted source falls outside a non-periodic scan are outside the *common area* of the three
scans: the runner projects only positions inside it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..quality import read_checked

__all__ = ["common_area", "drift_steps", "interior_keep", "read_aligned", "spline_shift"]


def drift_steps(geometry) -> np.ndarray:
    """The recorded drift of each scan in scan steps, shape (3, 2) (store order; zeros when not calibrated)."""
    return np.asarray(geometry.scan_drift, dtype=np.float64) / np.asarray(geometry.scan_step, dtype=np.float64)


def _beta3(t: np.ndarray) -> np.ndarray:
    """The cubic B-spline β³(t)."""
    a = np.abs(t)
    return np.where(a < 1, 2 / 3 - a ** 2 + a ** 3 / 2, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))


def spline_shift(a: np.ndarray, shift, *, axes=(0, 1)) -> np.ndarray:
    """``a`` shifted by ``shift`` along ``axes`` by cubic B-spline interpolation: out[x] = a[x − shift].

    Equal to ``scipy.ndimage.shift(a, shift, order=3, mode="nearest")`` restricted to those axes (the other
    axes are not interpolated), with the spline coefficients taken with mirror boundaries.

    Parameters
    ----------
    a : ndarray, float
    shift : sequence of float
        One per axis in ``axes``, in array samples.
    axes : sequence of int

    Returns
    -------
    ndarray
        Same shape and dtype as ``a``.
    """
    out = np.asarray(a)
    dtype = out.dtype if out.dtype.kind == "f" else np.float64
    for axis, s in zip(axes, shift):
        s = float(s)
        if s == 0.0:
            continue
        c = ndimage.spline_filter1d(out, order=3, axis=axis, output=dtype, mode="mirror")
        n, f = math.floor(s), s - math.floor(s)
        size = c.shape[axis]
        idx = np.arange(size)
        acc = np.zeros_like(c)
        for m in (-2, -1, 0, 1, 2):
            w = float(_beta3(np.array(-f - m)))
            if w == 0.0:
                continue
            take = np.clip(idx - n + m, 0, size - 1)
            acc += w * np.take(c, take, axis=axis)
        out = acc
    return out.astype(dtype, copy=False)


def common_area(scan_shape, drift, *, periodic: bool) -> np.ndarray:
    """Scan positions every scan has data for once on the focus grid.

    Parameters
    ----------
    scan_shape : (Rx, Ry)
    drift : ndarray, shape (3, 2)
        Scan steps (:func:`drift_steps`).
    periodic : bool
        A periodic scan wraps: every position is common.

    Returns
    -------
    ndarray, shape (Rx, Ry), bool
    """
    keep = np.ones(tuple(scan_shape), dtype=bool)
    if periodic:
        return keep
    for axis, n in enumerate(scan_shape):
        i = np.arange(n)
        ok = np.ones(n, bool)
        for d in np.asarray(drift)[:, axis]:
            ok &= (i - d >= -1e-9) & (i - d <= n - 1 + 1e-9)
        keep &= ok[:, None] if axis == 0 else ok[None, :]
    return keep


def interior_keep(geometry, xs, ys):
    """The common area (:func:`common_area`) over a tile's interior, shape (len(xs), len(ys)), or None when
    every position is common (no drift, or a periodic scan)."""
    drift = drift_steps(geometry)
    if geometry.periodic or not np.any(drift):
        return None
    keep = common_area(geometry.scan_shape, drift, periodic=False)[np.ix_(list(xs), list(ys))]
    return None if keep.all() else keep


def _extended(index, margin: int, n: int, periodic: bool) -> list[int]:
    first, last = int(index[0]), int(index[-1])
    ext = list(range(first - margin, first)) + [int(i) for i in index] + list(range(last + 1, last + 1 + margin))
    return [i % n for i in ext] if periodic else [min(max(i, 0), n - 1) for i in ext]


def read_aligned(path, geometry, rows, cols, *, defocus=None, bright_field=None):
    """``read_checked(path, rows, cols)`` with every scan resampled onto the focus scan's grid.

    Parameters
    ----------
    path : str or StoreHandle
    geometry : ReconstructionGeometry
        ``scan_drift`` (Å), ``scan_step``, ``scan_shape`` and ``periodic`` are used.
    rows, cols : sequence of int
        Global scan indices (contiguous or wrapped) of the block.
    defocus : sequence of int, optional
        Scans to read (default all three).
    bright_field : (cx, cy, radius), optional

    Returns
    -------
    block : ndarray, shape (D, len(rows), len(cols), Qx, Qy), float32
        As stored (detector orientation not undone), each scan on the focus grid.
    report : BlockReport
    """
    defocus = [0, 1, 2] if defocus is None else [int(d) for d in defocus]
    drift = drift_steps(geometry)[defocus]
    if not np.any(drift):
        return read_checked(path, rows, cols, defocus=defocus, bright_field=bright_field)
    rx, ry = geometry.scan_shape
    # the spline's coefficients feel the block's edge with a weight 0.268^n at n positions: 10 more positions
    # make a tile's values those of the whole scan to float32 round-off
    margin = int(math.ceil(np.abs(drift).max())) + 10
    ext_r = _extended(list(rows), margin, rx, geometry.periodic)
    ext_c = _extended(list(cols), margin, ry, geometry.periodic)
    ur, uc = list(dict.fromkeys(ext_r)), list(dict.fromkeys(ext_c))
    if not geometry.periodic:  # clipped: a contiguous range
        ur, uc = list(range(min(ur), max(ur) + 1)), list(range(min(uc), max(uc) + 1))
    block, report = read_checked(path, ur, uc, defocus=defocus, bright_field=bright_field)
    pos_r, pos_c = {v: k for k, v in enumerate(ur)}, {v: k for k, v in enumerate(uc)}
    block = block[:, [pos_r[i] for i in ext_r]][:, :, [pos_c[j] for j in ext_c]]
    out = np.empty((len(defocus), len(rows), len(cols)) + block.shape[3:], dtype=np.float32)
    for k, d in enumerate(drift):
        shifted = spline_shift(block[k], d, axes=(0, 1)) if np.any(d) else block[k]
        out[k] = shifted[margin:margin + len(rows), margin:margin + len(cols)]
    return out, report

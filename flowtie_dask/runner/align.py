"""The three scans on one grid: each scan resampled onto the focus scan's positions by the drift recorded in
the store (``ScanMetadata.scan_drift``, from ``flowtie-dask calibrate``), tile by tile.

Scan position (i, j) of scan s sees the specimen at focus-scan position (i, j) + d_s (d_s in scan steps), so
the scan on the focus grid is I_s(i − d_s): a shift by +d_s over the two scan axes, the same for every
detector pixel. It is a cubic B-spline shift (local: a tile read with a margin of ⌈|d|⌉ + 10 positions gives the
whole scan's values to float32 round-off; no wrap-around ringing as with a Fourier shift on a non-periodic
tile).
With ``geometry.scan_band_limit`` set (1/Å), every block is also low-passed over the scan axes at that limit
(:mod:`flowtie_dask.bandlimit`: shot noise above the highest frequency any pattern's pixel holds), read with
:func:`~flowtie_dask.bandlimit.band_margin` more positions around it (within the common window).
Positions whose shifted source falls outside a non-periodic scan are outside the *common area* of the three
scans: the runner works on the largest window inside it (:func:`window_geometry`), reading the spline's
margins from the rest of the scan.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage

from ..bandlimit import band_limit, band_margin
from ..quality import read_checked

__all__ = ["common_area", "common_window", "descan_correct", "descan_offsets", "drift_steps", "pattern_shift",
           "read_aligned", "spline_shift", "window_geometry"]


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
        # the shift is one linear map along the axis, the same for every line: built once on the identity and
        # applied as a matrix product (BLAS; 3–4× faster on a 4D block than filtering every line)
        m = _shift_matrix(out.shape[axis], s).astype(dtype)
        out = np.moveaxis(np.tensordot(m, out.astype(dtype, copy=False), axes=([1], [axis])), 0, axis)
    return np.ascontiguousarray(out, dtype=dtype)


def _shift_matrix(size: int, s: float) -> np.ndarray:
    """(size, size) float64 matrix M with (M·a)[x] = a[x − s] by cubic B-spline interpolation, spline coefficients
    taken with mirror boundaries, samples beyond the ends clamped to them."""
    c = ndimage.spline_filter1d(np.eye(size), order=3, axis=0, output=np.float64, mode="mirror")
    n, f = math.floor(s), s - math.floor(s)
    idx = np.arange(size)
    acc = np.zeros_like(c)
    for m in (-2, -1, 0, 1, 2):
        w = float(_beta3(np.array(-f - m)))
        if w:
            acc += w * c[np.clip(idx - n + m, 0, size - 1)]
    return acc


def _keys(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel (a = −1/2): interpolating, exact for quadratics."""
    a = np.abs(t)
    return np.where(a <= 1, 1.5 * a**3 - 2.5 * a**2 + 1, np.where(a < 2, -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2, 0.0))


def pattern_shift(patterns: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Each pattern moved by its own sub-pixel shift over the two detector axes: out_n[x] = p_n[x − shift_n].

    Keys cubic convolution along each detector axis (interpolating: a whole-pixel shift is exact), edges
    continued by the nearest pixel; non-negative input stays non-negative.

    Parameters
    ----------
    patterns : ndarray, shape (N, Qx, Qy)
    shift : ndarray, shape (N, 2)
        Detector pixels along (Qx, Qy).

    Returns
    -------
    ndarray, shape (N, Qx, Qy), float32
    """
    out = np.asarray(patterns, dtype=np.float32)
    shift = np.asarray(shift, dtype=np.float64).reshape(-1, 2)
    nonnegative = bool((out >= 0).all())
    for axis in (1, 2):
        s = shift[:, axis - 1]
        if not np.any(s):
            continue
        whole = np.floor(s)
        frac = (s - whole)[:, None]
        size = out.shape[axis]
        base = np.arange(size)[None, :] - whole[:, None].astype(int) - 1  # (N, size): x − ⌊s⌋ − 1
        acc = np.zeros_like(out)
        for t in (-1, 0, 1, 2):  # x − s = base + (1 − f): taps base + t with weights K(1 − f − t)
            w = _keys(1 - frac - t).astype(np.float32)
            idx = np.clip(base + t, 0, size - 1)
            if axis == 1:
                acc += w[:, :, None] * np.take_along_axis(out, idx[:, :, None], axis=1)
            else:
                acc += w[:, None, :] * np.take_along_axis(out, idx[:, None, :], axis=2)
        out = acc
    return np.maximum(out, 0) if nonnegative else out


def descan_offsets(geometry, rows, cols) -> np.ndarray | None:
    """The recorded descan (``geometry.descan``) at store scan indices: shape (len(rows), len(cols), 2) detector
    pixels (stored axes) relative to the scan's middle, or None when no descan is to be applied."""
    if not geometry.descan:
        return None
    slope = np.asarray(geometry.descan, dtype=np.float64)  # [detector axis k][scan axis a]
    rx, ry = geometry.store_scan_shape or geometry.scan_shape
    i = np.asarray(rows, dtype=np.float64)[:, None] - (rx - 1) / 2
    j = np.asarray(cols, dtype=np.float64)[None, :] - (ry - 1) / 2
    return np.stack([slope[k, 0] * i + slope[k, 1] * j for k in (0, 1)], axis=-1)


def descan_correct(block: np.ndarray, geometry, rows, cols) -> np.ndarray:
    """Every pattern of a block moved back by the descan at its position (:func:`descan_offsets`), so the
    unscattered beam sits where it sits at the scan's middle (``detector_center``).

    Parameters
    ----------
    block : ndarray, shape (D, len(rows), len(cols), Qx, Qy)
        As stored.
    rows, cols : sequence of int
        Store scan indices.

    Returns
    -------
    ndarray, same shape, float32 (``block`` itself when there is no descan to apply)
    """
    d = descan_offsets(geometry, rows, cols)
    if d is None:
        return block
    shape = block.shape
    flat = block.reshape((-1,) + shape[-2:])
    shifts = np.broadcast_to(-d[None], (shape[0],) + d.shape).reshape(-1, 2)
    return pattern_shift(flat, shifts).reshape(shape)


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
            ok &= (i - d >= -1e-6) & (i - d <= n - 1 + 1e-6)  # a drift of round-off size crops nothing
        keep &= ok[:, None] if axis == 0 else ok[None, :]
    return keep


def common_window(geometry):
    """The largest window of the scan that every scan covers on the focus grid: ((r0, r1), (c0, c1)) store
    indices (r1, c1 exclusive); the whole scan when periodic or without drift.

    Raises
    ------
    ValueError
        When the drift leaves no position common to the three scans.
    """
    rx, ry = geometry.scan_shape
    if geometry.periodic or not np.any(drift_steps(geometry)):
        return (0, rx), (0, ry)
    keep = common_area(geometry.scan_shape, drift_steps(geometry), periodic=False)
    rows, cols = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
    if rows.size < 2 or cols.size < 2:
        raise ValueError(f"the recorded drift {geometry.scan_drift} Å leaves no common area of the three scans "
                         f"({rx}×{ry} positions): check the calibration (flowtie-dask calibrate)")
    return (int(rows[0]), int(rows[-1]) + 1), (int(cols[0]), int(cols[-1]) + 1)


def window_geometry(geometry):
    """The geometry of :func:`common_window` (``scan_offset``, ``store_scan_shape`` set), or ``geometry`` itself
    when that is the whole scan."""
    (r0, r1), (c0, c1) = common_window(geometry)
    if (r0, r1, c0, c1) == (0, geometry.scan_shape[0], 0, geometry.scan_shape[1]):
        return geometry
    return dataclasses.replace(geometry, scan_shape=(r1 - r0, c1 - c0), scan_offset=(r0, c0),
                               store_scan_shape=tuple(geometry.scan_shape))


def _extended(index, margin, n: int, periodic: bool) -> list[int]:
    """``index`` with ``margin`` positions before and after (an int, or (before, after)); wrapped when periodic,
    clamped to [0, n) otherwise."""
    before, after = (margin, margin) if isinstance(margin, int) else (int(margin[0]), int(margin[1]))
    first, last = int(index[0]), int(index[-1])
    ext = list(range(first - before, first)) + [int(i) for i in index] + list(range(last + 1, last + 1 + after))
    return [i % n for i in ext] if periodic else [min(max(i, 0), n - 1) for i in ext]


def read_aligned(path, geometry, rows, cols, *, defocus=None, bright_field=None):
    """``read_checked(path, rows, cols)`` with every scan resampled onto the focus scan's grid.

    Parameters
    ----------
    path : str or StoreHandle
    geometry : ReconstructionGeometry
        ``scan_drift`` (Å), ``scan_step``, ``scan_shape``, ``periodic`` and the window (``scan_offset``,
        ``store_scan_shape``) are used.
    rows, cols : sequence of int
        Scan indices of the block in the geometry's scan (contiguous or wrapped).
    defocus : sequence of int, optional
        Scans to read (default all three).
    bright_field : (cx, cy, radius), optional

    Returns
    -------
    block : ndarray, shape (D, len(rows), len(cols), Qx, Qy), float32
        As stored (detector orientation not undone), the recorded descan undone (``geometry.descan``), each scan on
        the focus grid, low-passed at ``geometry.scan_band_limit`` when that is set.
    report : BlockReport
    """
    defocus = [0, 1, 2] if defocus is None else [int(d) for d in defocus]
    drift = drift_steps(geometry)[defocus]
    r0, c0 = geometry.scan_offset
    rows, cols = [int(r) + r0 for r in rows], [int(c) + c0 for c in cols]  # store indices
    band = float(geometry.scan_band_limit)
    rx, ry = geometry.store_scan_shape or geometry.scan_shape
    # a block that is the whole of a periodic scan is filtered exactly by its own FFT, without a margin
    whole = bool(geometry.periodic) and len(rows) == rx and len(cols) == ry
    bm = (0, 0) if whole or not band else band_margin(geometry.scan_step, band)
    if not np.any(drift) and not any(bm):
        block, report = read_checked(path, rows, cols, defocus=defocus, bright_field=bright_field)
        block = descan_correct(block, geometry, rows, cols)
        if band:
            block = band_limit(block, step=geometry.scan_step, cutoff=band, periodic=True)
        return block, report
    spline = int(math.ceil(np.abs(drift).max())) + 10 if np.any(drift) else 0
    # the band margin stops at a non-periodic scan's edge (the filter's even extension is the boundary there);
    # the spline's margin is read around the block and its band margin
    # (non-periodic: within the window this geometry works on, whose drifted scans all hold data)
    wx, wy = geometry.scan_shape
    keep = [(b, b) if geometry.periodic else (min(b, idx[0] - o), min(b, o + w - 1 - idx[-1]))
            for idx, b, o, w in ((rows, bm[0], r0, wx), (cols, bm[1], c0, wy))]
    rows_b, cols_b = (_extended(idx, k, n, geometry.periodic) for idx, k, n in ((rows, keep[0], rx), (cols, keep[1], ry)))
    ext_r = _extended(rows_b, spline, rx, geometry.periodic)
    ext_c = _extended(cols_b, spline, ry, geometry.periodic)
    ur, uc = list(dict.fromkeys(ext_r)), list(dict.fromkeys(ext_c))
    if not geometry.periodic:  # clipped: a contiguous range
        ur, uc = list(range(min(ur), max(ur) + 1)), list(range(min(uc), max(uc) + 1))
    block, report = read_checked(path, ur, uc, defocus=defocus, bright_field=bright_field)
    block = descan_correct(block, geometry, ur, uc)  # in each scan's own positions, before the drift
    pos_r, pos_c = {v: k for k, v in enumerate(ur)}, {v: k for k, v in enumerate(uc)}
    block = block[:, [pos_r[i] for i in ext_r]][:, :, [pos_c[j] for j in ext_c]]
    # each scan on the focus grid, then (band limit) the block and its band margin low-passed (module docstring)
    sr, sc = slice(spline, spline + len(rows_b)), slice(spline, spline + len(cols_b))
    out = np.empty((len(defocus), len(rows_b), len(cols_b)) + block.shape[3:], dtype=np.float32)
    for k, d in enumerate(drift):
        out[k] = (spline_shift(block[k], d, axes=(0, 1)) if np.any(d) else block[k])[sr, sc]
    if band:
        out = band_limit(out, step=geometry.scan_step, cutoff=band, periodic=whole)
        (a, _), (b, _) = keep
        return np.ascontiguousarray(out[:, a:a + len(rows), b:b + len(cols)]), report
    return np.maximum(out, 0), report  # the spline's overshoot below 0

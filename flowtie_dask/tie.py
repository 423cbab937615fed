"""Transport-of-intensity kernels over the scan coordinates, one detector pixel at a time (DESIGN §3).

For each detector pixel q, I(q, r̂) over the scan is an image that the probe defocus propagates.
In the probe frame Ψ(q, r̂) = E(q, r̂)·exp(+2πi q·r̂), φ = arg Ψ, the continuity equation reads

    ∂I/∂C10 = −(λ/2π) ∇·(I ∇φ) + λ q·∇I.

Arrays are (Rx, Ry, Qx, Qy) with the scan axes first; q is the true scattering vector of each
detector pixel (see :mod:`flowtie_dask.geometry`). Kernels run on NumPy or CuPy and never import
dask or zarr. :func:`integrate_gradient` is :func:`flowtie_dask.integrate.integrate_gradient` (NumPy,
CuPy and torch), re-exported here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .backend import get_array_module, get_fft_module
from .integrate import integrate_gradient
from .integrate import mirror_gradient as _mirror_gradient  # noqa: F401  (the name before flowtie_dask.integrate)

__all__ = [
    "defocus_derivative",
    "tie_phase",
    "mirror_extend",
    "mirror_rows",
    "mirror_row_ranges",
    "window_rows",
    "forward_differences",
    "smooth_gradient",
    "wrap_gradient",
    "integrate_gradient",
]


def defocus_derivative(intensity: Any, c10: tuple[float, float, float], *, out: Any = None):
    """Central finite difference ∂I/∂C10 and the in-focus intensity of a defocus series.

    Parameters
    ----------
    intensity : ndarray, shape (3, ...)
        The three scans in the order of ``c10``.
    c10 : tuple of 3 floats
        C10 of each scan in Å (C10 = −Δf).
    out : ndarray, shape (2, ...), optional
        Written with ``didz`` in ``out[0]`` and ``i0`` in ``out[1]`` (one buffer, no temporaries); the two
        returned arrays are then those views. It may be ``intensity[:2]`` itself when the focus is the second
        scan (the difference is then written over the first).

    Returns
    -------
    didz : ndarray, shape (...)
        (I(C10_max) − I(C10_min)) / (C10_max − C10_min), per Å.
    i0 : ndarray, shape (...)
        The scan with the middle C10 (the focus).
    """
    order = np.argsort(np.asarray(c10, dtype=float))
    lo, mid, hi = (int(i) for i in order)
    span = float(c10[hi]) - float(c10[lo])
    if not span > 0:
        raise ValueError(f"the defocus values {c10} must differ")
    if out is None:
        return (intensity[hi] - intensity[lo]) / span, intensity[mid]
    xp = get_array_module(intensity)
    xp.subtract(intensity[hi], intensity[lo], out=out[0])
    out[0] /= span
    if not _same_view(out[1], intensity[mid]):  # else out[1] is the focus scan itself
        out[1] = intensity[mid]
    return out[0], out[1]


def _same_view(a, b) -> bool:
    """Whether two arrays (NumPy or CuPy) are the same view of the same memory."""
    def start(x):
        return x.data.ptr if hasattr(x.data, "ptr") else x.__array_interface__["data"][0]

    return a.shape == b.shape and a.strides == b.strides and start(a) == start(b)


def _host(x):
    return np.asarray(x.get() if hasattr(x, "get") else x)


def _flip_taps(n: int, center: float):
    """The detector pixel at −q of every pixel j: position 2c − j, as (indices (n, T), weights (T,)).

    Exact (one tap) when 2c is a whole number; otherwise Keys' cubic convolution (four taps, a = −½) between
    the pixels around 2c − j: a centre off the half-pixel grid (a measured beam centre) is not rounded to the
    nearest pixel. Indices wrap modulo n.
    """
    pos = 2.0 * float(center) - np.arange(n)
    frac = float(pos[0] - math.floor(pos[0]))
    if min(frac, 1.0 - frac) < 1e-9:
        return np.mod(np.rint(pos).astype(int), n)[:, None], np.ones(1)
    offsets = np.array([-1, 0, 1, 2])
    idx = np.mod(np.floor(pos).astype(int)[:, None] + offsets[None, :], n)
    t = np.abs(frac - offsets)
    a = -0.5
    w = np.where(t <= 1, (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1, a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a)
    return idx, w


def _mirror_taps(nqx: int, nqy: int, center):
    """Taps of the three mirrored detectors (q_x → −q_x, q_y → −q_y, both) on the flattened pixel index:
    a list of (indices (P,), weight) per mirror."""
    (ix, wx), (iy, wy) = _flip_taps(nqx, center[0]), _flip_taps(nqy, center[1])
    pix = np.arange(nqx * nqy).reshape(nqx, nqy)
    fx = [(pix[ix[:, a], :].ravel(), float(wx[a])) for a in range(len(wx))]
    fy = [(pix[:, iy[:, b]].ravel(), float(wy[b])) for b in range(len(wy))]
    fxy = [(pix[ix[:, a]][:, iy[:, b]].ravel(), float(wx[a] * wy[b])) for a in range(len(wx)) for b in range(len(wy))]
    return fx, fy, fxy


def _gather(flat, sl, taps, xp):
    """Σ w·flat[..., idx[sl]] over the taps (idx: for each full-detector pixel, its image in ``flat``)."""
    out = None
    for idx, w in taps:
        part = xp.take(flat, xp.asarray(idx[sl]), axis=2)
        out = part * w if out is None else out + part * w
    return out


def _mirror_block(flat, sl, local, flips, xp):
    """(Rx, Ry, P) detector-flattened data → (2Rx, 2Ry, b) mirror extension of the pixels ``sl`` (full-detector
    flattened indices; ``local``: the same pixels in ``flat``, a window of detector rows)."""
    fx, fy, fxy = flips
    top = xp.concatenate([flat[:, :, local], xp.flip(_gather(flat, sl, fy, xp), axis=1)], axis=1)
    bottom = xp.concatenate([xp.flip(_gather(flat, sl, fx, xp), axis=0),
                             xp.flip(_gather(flat, sl, fxy, xp), axis=(0, 1))], axis=1)
    return xp.concatenate([top, bottom], axis=0)


def _k(n: int, step: float, xp):
    return xp.fft.fftfreq(n, d=step)


def mirror_extend(x: Any, *, axes: tuple[int, int] = (0, 1), flip_axes: tuple[Any, Any] = (None, None)):
    """Even (mirror) extension of scan axes to twice their length.

    Parameters
    ----------
    x : ndarray, shape (Rx, Ry, ...)
    axes : (int, int)
        Scan axes.
    flip_axes : (index array or None, index array or None)
        For each scan axis, a permutation of a detector axis applied to the mirrored copy
        (``q → −q`` along that scan direction: a mirrored scan sees a mirrored detector). The
        permutation acts on axis 2 for scan axis 0 and on axis 3 for scan axis 1.

    Returns
    -------
    ndarray, shape (2Rx, 2Ry, ...)
    """
    xp = get_array_module(x)
    for ax, perm in zip(axes, flip_axes):
        mirrored = xp.flip(x, axis=ax)
        if perm is not None:
            mirrored = xp.take(mirrored, perm, axis=ax + 2)
        x = xp.concatenate([x, mirrored], axis=ax)
    return x


def tie_phase(
    didz: Any,
    i0: Any,
    *,
    qx: Any,
    qy: Any,
    wavelength: float,
    step: tuple[float, float],
    boundary: str = "periodic",
    center: tuple[float, float] | None = None,
    reference: Any = None,
    eps: float = 1e-3,
    batch: int | None = None,
    row0: int = 0,
    rows: tuple[int, int] | None = None,
    ibar_max: float | None = None,
):
    """Classical TIE (thin-specimen Poisson form) per detector pixel, in the probe frame.

    Solves ∇²φ = −(2π/(λ Ī(q)))·(∂I/∂C10 − λ q·∇I) over the scan by FFT, Ī(q) = scan mean of I₀,
    with the per-q mean of φ set to ``reference`` (0 when None).

    Parameters
    ----------
    didz : ndarray, shape (Rx, Ry, Qx, Qy)
        ∂I/∂C10 in 1/Å (unit-sum patterns).
    i0 : ndarray, shape (Rx, Ry, Qx, Qy)
        In-focus intensity.
    qx, qy : ndarray, shape (Qx,), (Qy,)
        True scattering vector of each detector pixel, 1/Å.
    wavelength : float
        Å.
    step : (sx, sy)
        Scan step in Å.
    boundary : {"periodic", "mirror"}
        "periodic" for scans over whole periods; "mirror" for tiles and other non-periodic scans:
        the tile is extended by its mirror images, whose patterns are the tile's with the detector
        mirrored too (q → −q), and solved periodically (DESIGN §3).
    center : (cx, cy), optional
        Detector pixel of q = 0, the centre of the q → −q flip (default: the pixel nearest q = 0).
    reference : ndarray, shape (Qx, Qy), optional
        Per-q mean phase (e.g. the probe's phase arg P̃(q)), rad.
    eps : float
        Ī is clipped below at ``eps``·max Ī (dark-field regularisation).
    batch : int, optional
        Detector pixels solved at once; by default enough for ~4 M scan-grid values per array (with
        the mirror images), which keeps the solver's temporaries near 150 MB whatever the tile.
    row0 : int or sequence of int
        ``didz`` and ``i0`` may hold a window of detector rows, shape (Rx, Ry, W, Qy): rows
        ``row0 … row0 + W − 1`` of the detector that ``qx`` (all Qx rows) describes, or, given as W ascending
        row numbers, any rows (e.g. a block and its mirror image's rows, :func:`mirror_row_ranges`).
    rows : (int, int), optional
        Detector rows [start, stop) to solve (default: every row of the window). With the mirror boundary
        the window must also hold the rows their q → −q images read (:func:`mirror_rows`).
    ibar_max : float, optional
        The largest Ī(q) over the whole detector for the ``eps`` clip (default: the window's).

    Returns
    -------
    ndarray, shape (Rx, Ry, rows, Qy), float32 for float32 ``didz``, else float64
        Probe-frame phase φ(q, r̂) in rad.
    """
    xp = get_array_module(i0)
    fft = get_fft_module(xp)
    if boundary not in ("periodic", "mirror"):
        raise ValueError(f"boundary must be 'periodic' or 'mirror', got {boundary!r}")
    rx, ry, width, nqy = i0.shape
    real = xp.float32 if didz.dtype == xp.float32 else xp.float64
    qx = xp.asarray(qx, dtype=xp.float64)
    qy = xp.asarray(qy, dtype=xp.float64)
    nqx = int(qx.shape[0])
    held = window_rows(row0, width)
    if rows is None and held[-1] - held[0] + 1 != width:
        raise ValueError(f"a window of listed rows {held.tolist()} needs ``rows``, the consecutive rows to solve")
    r0, r1 = (int(held[0]), int(held[-1]) + 1) if rows is None else (int(rows[0]), int(rows[1]))
    slot = np.full(nqx, -1)  # detector row → its row in the window (−1: not held)
    if held.min() < 0 or held.max() >= nqx:
        raise ValueError(f"the window's rows {held.min()}–{held.max()} must lie on a {nqx}-row detector")
    slot[held] = np.arange(width)
    if not (0 <= r0 < r1 <= nqx and np.array_equal(slot[r0:r1], slot[r0] + np.arange(r1 - r0)) and slot[r0] >= 0):
        raise ValueError(f"rows {r0}–{r1} must lie in the window {_span(held)} of a {nqx}-row detector")
    mirror = boundary == "mirror"
    mx, my = (2 * rx, 2 * ry) if mirror else (rx, ry)
    if batch is None:
        batch = max(8, 2**22 // (mx * my))
    # the spectral factors in the data's precision: float32 data stay complex64 through both FFTs
    kx = _k(mx, step[0], xp)[:, None, None]
    ky = xp.fft.rfftfreq(my, d=step[1])[None, :, None]
    k2 = kx**2 + ky**2
    k2[0, 0, 0] = 1.0
    inv_k2 = (1.0 / k2).astype(real)
    inv_k2[0, 0, 0] = 0.0  # the per-q mean of φ: set by ``reference``
    tilt_x = (kx * (2 * math.pi * wavelength)).astype(real)  # λ·2π K, so the tilt term is i·(q·tilt)·Ĩ
    tilt_y = (ky * (2 * math.pi * wavelength)).astype(real)
    ibar = i0.mean(axis=(0, 1), dtype=xp.float64)
    ibar = xp.maximum(ibar, eps * (float(ibar.max()) if ibar_max is None else float(ibar_max)))
    qxf = xp.broadcast_to(qx[:, None], (nqx, nqy)).reshape(-1).astype(real)
    qyf = xp.broadcast_to(qy[None, :], (nqx, nqy)).reshape(-1).astype(real)
    d_flat = didz.reshape(rx, ry, -1)
    i_flat = i0.reshape(rx, ry, -1)
    shift = (r0 - int(slot[r0])) * nqy  # flattened full-detector index of the solved rows → index in the window
    ib_flat = ibar.reshape(-1)
    out = xp.empty((rx, ry, (r1 - r0) * nqy), dtype=real)
    if mirror:
        if center is None:
            center = (float(np.argmin(np.abs(_host(qx)))), float(np.argmin(np.abs(_host(qy)))))

        def local_index(idx):  # full-detector flattened pixel → the window's (negative: a row not held)
            row, col = np.divmod(idx, nqy)
            return np.where(slot[row] >= 0, slot[row] * nqy + col, -1)

        flips = [[(local_index(idx), w) for idx, w in taps] for taps in _mirror_taps(nqx, nqy, center)]
        needed = np.concatenate([idx[r0 * nqy:r1 * nqy] for taps in flips for idx, _ in taps])
        if needed.min() < 0:
            raise ValueError(f"the q → −q images of rows {r0}–{r1} lie outside the window {_span(held)}: "
                             "give the rows mirror_row_ranges names")
    for s in range(r0 * nqy, r1 * nqy, batch):
        sl = slice(s, min(s + batch, r1 * nqy))  # full-detector flattened pixels
        local = slice(sl.start - shift, sl.stop - shift)
        if mirror:
            # the mirror image of the tile is a physical object too: its patterns at q are the tile's at
            # −q along the mirrored direction (Ψ'(q, r̂) = Ψ(Mq, Mr̂) for a symmetric probe). Solving the
            # periodic TIE on the tile plus its mirror images keeps the tilt term λq·∇I right.
            d = _mirror_block(d_flat, sl, local, flips, xp).astype(real, copy=False)
            i = _mirror_block(i_flat, sl, local, flips, xp).astype(real, copy=False)
        else:
            d = d_flat[:, :, local].astype(real)
            i = i_flat[:, :, local].astype(real)
        # φ̃ = −(2π/(λĪ))·(D̃ − λ·2πi q·K Ĩ) / (−4π²|K|²), spectral on the (extended) periodic scan
        d_hat = fft.rfft2(d, axes=(0, 1))
        i_hat = fft.rfft2(i, axes=(0, 1))
        i_hat *= qxf[sl] * tilt_x + qyf[sl] * tilt_y
        i_hat *= 1j
        d_hat -= i_hat  # D̃ − λ·2πi q·K Ĩ
        d_hat *= inv_k2 * (1.0 / (2 * math.pi * wavelength * ib_flat[local])).astype(real)
        out[:, :, sl.start - r0 * nqy:sl.stop - r0 * nqy] = fft.irfft2(d_hat, s=(mx, my), axes=(0, 1))[:rx, :ry]
    out = out.reshape(rx, ry, r1 - r0, nqy)
    if reference is not None:
        out += xp.asarray(reference)[r0:r1][None, None]
    return out


def mirror_rows(rows: tuple[int, int], nqx: int, center: float) -> tuple[int, int]:
    """Detector rows [start, stop) that the mirror-boundary TIE of ``rows`` reads: the rows themselves and
    the taps of their q_x → −q_x images about ``center`` (the detector pixel of q_x = 0), as one range: the span
    of :func:`mirror_row_ranges`."""
    ranges = mirror_row_ranges(rows, nqx, center)
    return ranges[0][0], ranges[-1][1]


def mirror_row_ranges(rows: tuple[int, int], nqx: int, center: float) -> tuple[tuple[int, int], ...]:
    """The detector rows the mirror-boundary TIE of ``rows`` reads, as few disjoint ranges [start, stop): the
    rows themselves and the taps of their q_x → −q_x images (a block far from the centre reads two short
    ranges, not every row between them as :func:`mirror_rows` does)."""
    idx, _ = _flip_taps(nqx, center)
    need = np.zeros(nqx, dtype=bool)
    need[rows[0]:rows[1]] = True
    need[idx[rows[0]:rows[1]].ravel()] = True
    edges = np.flatnonzero(np.diff(np.concatenate([[0], need.astype(np.int8), [0]])))
    return tuple((int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]))


def window_rows(row0, width: int) -> np.ndarray:
    """Detector rows a window of ``width`` rows holds: ``row0 … row0 + width − 1`` for an int ``row0``, else the
    ``width`` ascending rows ``row0`` lists (ValueError otherwise)."""
    if np.ndim(row0) == 0:
        return int(row0) + np.arange(width)
    held = np.asarray(row0, dtype=int).reshape(-1)
    if len(held) != width or np.any(np.diff(held) <= 0):
        raise ValueError(f"a window's rows must be {width} ascending detector rows, got {held.tolist()}")
    return held


def _span(held) -> str:
    return f"{int(held[0])}–{int(held[-1]) + 1}" if held[-1] - held[0] + 1 == len(held) else str(held.tolist())


def forward_differences(phase: Any, *, step: tuple[float, float]):
    """Wrapped-phase forward differences g = (φ(r̂+step) − φ(r̂))/step over a periodic scan.

    The differences of the wrapped angle keep their 2π jumps, so g is an exact discrete gradient
    (DESIGN §3: the field FlowTIE trains on).

    Parameters
    ----------
    phase : ndarray, shape (Rx, Ry, ...)
        Wrapped phase in rad.
    step : (sx, sy)
        Å.

    Returns
    -------
    gx, gy : ndarray, shape (Rx, Ry, ...)
        rad/Å; the last row/column wraps around to the first.
    """
    xp = get_array_module(phase)
    gx = (xp.roll(phase, -1, axis=0) - phase) / step[0]
    gy = (xp.roll(phase, -1, axis=1) - phase) / step[1]
    return gx, gy


def wrap_gradient(g: Any, step: float):
    """wrap(g·step)/step: each difference mapped into (−π, π] — the smooth gradient away from vortices."""
    xp = get_array_module(g)
    x = g * step
    return (x - 2 * math.pi * xp.floor((x + math.pi) / (2 * math.pi))) / step


def smooth_gradient(psi: Any, *, step: tuple[float, float]):
    """Physical gradient Im(Ψ*∇Ψ)/|Ψ|² over a periodic scan, by spectral derivatives.

    Parameters
    ----------
    psi : ndarray, shape (Rx, Ry, ...), complex
    step : (sx, sy)

    Returns
    -------
    gx, gy : ndarray, shape (Rx, Ry, ...), rad/Å (0 where Ψ = 0)
    """
    xp = get_array_module(psi)
    fft = get_fft_module(xp)
    out = []
    for ax, s in ((0, step[0]), (1, step[1])):
        shape = [1] * psi.ndim
        shape[ax] = psi.shape[ax]
        k = (2j * math.pi * _k(psi.shape[ax], s, xp)).reshape(shape)
        d = fft.ifft(fft.fft(psi, axis=ax) * k, axis=ax)
        i = xp.abs(psi) ** 2
        out.append(xp.where(i > 0, xp.imag(xp.conj(psi) * d) / xp.where(i > 0, i, 1), 0.0))
    return tuple(out)

"""Diffraction-power consistency of the projection: each ring of the exit-wave spectra rescaled until the
object it projects to scatters as much into that ring as the measured patterns do.

The projection (:mod:`flowtie_dask.projection`) averages, at every object pixel, the exit waves
ψ̂(u; r̂) = F⁻¹[√I₀·e^{iφ}] of all the scan positions whose probe covers it. With the exact phase φ they agree
and the average is the object. With an estimated phase (TIE's or the network's) they disagree where the estimate
is poor — chiefly in the dark field, where the phase is least determined — and their average has lost power at
those scattering angles: the object is too smooth, and its own far field, F[O(r̂ + u)·P(u)], holds less dark-field
intensity than was measured.

The measured mean intensity in each detector ring |q| = const is a fact of the data, independent of any phase.
:func:`ring_gains` compares it with the mean intensity the projected object predicts (:func:`predicted_patterns`,
the forward model of the projection) and scales the ring's exit-wave amplitudes by √(measured / predicted);
the projection is repeated with the scaled amplitudes (``consistency`` times, ``reconstruct.project_tile``).
With exact phases the gains are 1 and nothing changes. The gain of each ring is kept within
[1/``limit``, ``limit``] (default 2): where the phase estimate carries no coherent signal, matching the power
would only amplify its errors, so no ring's amplitude is changed by more than a factor of two.

Rings are whole detector pixels of scattering angle about the unscattered beam's pixel (the oriented patterns
keep an off-centre beam where it is): the measured ones in the detector's frame, the predicted ones in the scan's
frame, where a turned detector (``window_rotation``) puts the beam's offset from Q//2 turned with the windows;
rings are the same in both frames, within the circle the detector holds whole. The statistics are taken on a
regular subset of the tile's positions (:func:`statistics_subset`): they are means over thousands of patterns.

Measured (MSE, two iterations against one projection; ``benchmarks/consistency.py``): Table 1 FlowTIE −8 to −30 %,
TIE −0.2 to −5 %; at 10⁴ e⁻/pattern FlowTIE −12 to −27 %, TIE within ±0.4 %; the external MgO (abTEM) FlowTIE
−12 %, TIE −23 %; the experiment-like Si series after calibration (detector turned by 31°, beam 3 px off the
layout's centre) FlowTIE −23 %, TIE −1.7 %. On waves that are wrong (an uncalibrated series) it matches their
power and makes them worse.
Kernels run on NumPy or CuPy and never import dask or zarr.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .backend import get_array_module
from .projection import probe_windows

__all__ = ["DEFAULT_ITERATIONS", "DEFAULT_LIMIT", "predicted_far_fields", "predicted_patterns", "ring_gains",
           "ring_index", "ring_sums", "statistics_subset"]

#: Consistency iterations of the projection methods by default.
DEFAULT_ITERATIONS = 2
#: The largest factor by which any ring's amplitudes are changed (and 1/limit the smallest).
DEFAULT_LIMIT = 2.0


def ring_index(shape: tuple[int, int], centre: tuple[float, float] | None = None) -> np.ndarray:
    """The ring of each detector pixel: round(|j − centre|) in pixels, rings of equal scattering angle about the
    unscattered beam.

    Parameters
    ----------
    shape : (Qx, Qy)
    centre : (cx, cy), optional
        The beam's pixel (fractional); default the layout's centre (Qx//2, Qy//2).

    Returns
    -------
    ndarray, shape (Qx, Qy), int64
    """
    qx, qy = shape
    cx, cy = (qx // 2, qy // 2) if centre is None else (float(centre[0]), float(centre[1]))
    r = np.hypot(*np.meshgrid(np.arange(qx) - cx, np.arange(qy) - cy, indexing="ij"))
    return np.rint(r).astype(np.int64)


def ring_sums(patterns: Any, rings: np.ndarray, *, length: int | None = None) -> np.ndarray:
    """Intensity summed over patterns and over each ring.

    Parameters
    ----------
    patterns : ndarray, shape (..., Qx, Qy)
        Intensities (unit-sum patterns; any scale, the same for the two sides of :func:`ring_gains`).
    rings : ndarray, shape (Qx, Qy), int
        :func:`ring_index`.
    length : int, optional
        Rings to return (default rings.max() + 1).

    Returns
    -------
    ndarray, shape (length,), float64 (host)
        In the patterns' units.
    """
    xp = get_array_module(patterns)
    total = xp.asarray(patterns).reshape((-1,) + rings.shape).sum(axis=0, dtype=xp.float64)
    total = np.asarray(total.get() if hasattr(total, "get") else total)
    n = int(rings.max()) + 1 if length is None else int(length)
    return np.bincount(rings.ravel(), weights=total.ravel(), minlength=n)[:n]


def ring_gains(measured: np.ndarray, predicted: np.ndarray, *, full: int | None = None,
               floor: float = 1e-9) -> np.ndarray:
    """√(measured / predicted) per ring; 1 where either sum is below ``floor`` times its largest ring.

    Parameters
    ----------
    measured, predicted : ndarray, shape (R,), float
        :func:`ring_sums` of the measured patterns and of the projected object's (the same positions).
    full : int, optional
        The last ring the detector holds whole: the rings beyond it (the detector's corners, which a turned
        detector and the scan's frame do not share) take its gain. None: every ring its own.
    floor : float
        Relative level below which a ring counts as empty.

    Returns
    -------
    ndarray, shape (R,), float64
    """
    measured = np.asarray(measured, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if not (np.all(np.isfinite(measured)) and np.all(np.isfinite(predicted))):
        raise ValueError("the ring intensities are not finite (NaN or inf in the patterns or the phase): check the "
                         "data (flowtie-dask info) or run with --consistency 0")
    ok = (measured > floor * max(measured.max(), 0.0)) & (predicted > floor * max(predicted.max(), 0.0))
    gains = np.ones_like(measured)
    gains[ok] = np.sqrt(measured[ok] / predicted[ok])
    if full is not None and 0 <= full < len(gains) - 1:
        gains[full + 1:] = gains[full]
    return gains


def statistics_subset(shape: tuple[int, int], *, positions: int = 1024) -> np.ndarray:
    """Flat indices of a regular subset of a (bx, by) block of scan positions: every s-th row and column, s the
    largest stride that keeps at least ``positions`` of them (all when the block has fewer).

    Parameters
    ----------
    shape : (bx, by)
        Scan positions of the block.
    positions : int
        The fewest positions to keep.

    Returns
    -------
    ndarray, shape (M,), int64
    """
    bx, by = (int(v) for v in shape)
    s = max(1, int(math.isqrt(max(bx * by // max(int(positions), 1), 1))))
    ix, iy = np.meshgrid(np.arange(0, bx, s), np.arange(0, by, s), indexing="ij")
    return (ix * by + iy).ravel()


def predicted_far_fields(obj: Any, positions: Any, probe_spectrum: Any, *, offset: tuple[int, int] = (0, 0),
                         periodic: bool, rotation: float = 0.0) -> Any:
    """The far fields F[O(r̂ + u)·P(u − f)] of an object: the forward model of
    :func:`~flowtie_dask.projection.overlap_add` (the same windows, probe and sub-pixel shifts; with
    ``rotation`` 0 its numerator is this map's adjoint).

    Parameters
    ----------
    obj : ndarray, shape (Nx, Ny), complex
        The (partial) object, its pixel (0, 0) at object pixel ``offset``.
    positions : ndarray, shape (B, 2)
        Object-pixel coordinate of each window centre, float (``geometry.positions_px``).
    probe_spectrum : ndarray, shape (Qx, Qy), complex
        Centred, Σ|P̃|² = 1 (``geometry.probe_spectrum``).
    offset : (int, int)
    periodic : bool
        Windows wrap around ``obj`` (a periodic object) or lie inside it.
    rotation : float
        Degrees the probe window is turned by onto the object grid (as in ``overlap_add``); the far fields are
        then in the object's frame.

    Returns
    -------
    ndarray, shape (B, Qx, Qy), complex128
        Centred like the patterns; unit-sum scale (a unit object gives Σ|·|² = 1).
    """
    xp = get_array_module(obj)
    qx, qy = probe_spectrum.shape
    positions = xp.asarray(positions, dtype=xp.float64)
    whole = xp.floor(positions)
    frac = positions - whole
    probes = probe_windows(probe_spectrum, frac, rotation=rotation)
    # centred window index c holds object pixel whole − Q//2 + c (overlap_add's mapping)
    sx = whole[:, 0].astype(xp.int64) - qx // 2 - int(offset[0])
    sy = whole[:, 1].astype(xp.int64) - qy // 2 - int(offset[1])
    nx, ny = obj.shape
    ix = sx[:, None] + xp.arange(qx)[None, :]
    iy = sy[:, None] + xp.arange(qy)[None, :]
    if periodic:
        ix, iy = ix % nx, iy % ny
    elif int(ix.min()) < 0 or int(iy.min()) < 0 or int(ix.max()) >= nx or int(iy.max()) >= ny:
        raise ValueError("a probe window falls outside the object grid; enlarge the object or use periodic=True")
    windows = xp.fft.ifftshift(obj[ix[:, :, None], iy[:, None, :]], axes=(-2, -1)) * probes
    far = xp.fft.fft2(windows)
    if bool(xp.any(frac != 0)):  # back to the probe frame: the window's index u is the wave at u − f
        kx, ky = xp.fft.fftfreq(qx), xp.fft.fftfreq(qy)
        far *= (xp.exp(2j * math.pi * frac[:, 0:1] * kx[None, :])[:, :, None]
                * xp.exp(2j * math.pi * frac[:, 1:2] * ky[None, :])[:, None, :])
    return xp.fft.fftshift(far, axes=(-2, -1)) / math.sqrt(qx * qy)


def predicted_patterns(obj: Any, positions: Any, probe_spectrum: Any, *, offset: tuple[int, int] = (0, 0),
                       periodic: bool, rotation: float = 0.0) -> Any:
    """|:func:`predicted_far_fields`|²: the intensities the object predicts, shape (B, Qx, Qy), float64, unit-sum
    scale (same parameters)."""
    far = predicted_far_fields(obj, positions, probe_spectrum, offset=offset, periodic=periodic, rotation=rotation)
    return far.real ** 2 + far.imag ** 2

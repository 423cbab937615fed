"""Per-tile reconstruction kernels: what one Dask task (or one inline call) computes.

A tile is a block of scan positions with a halo: its intensities (3, hx, hy, Qx, Qy) give the
probe-frame phase of every pattern (classical TIE here; FlowTIE plugs in the same way), and the
tile's interior positions are projected onto the object as a partial numerator and illumination
(:func:`flowtie_dask.projection.overlap_add`). Partials of all tiles add up to the whole-scan sums.
No dask or zarr here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from .backend import get_array_module
from .geometry import ReconstructionGeometry
from .consistency import DEFAULT_LIMIT, predicted_patterns, ring_gains, ring_index, ring_sums, statistics_subset
from .projection import divide_illumination, exit_wave_spectra, overlap_add
from .tie import defocus_derivative, tie_phase

__all__ = ["tie_phase_of_tile", "project_tile", "reconstruct_tile", "footprint"]


def tie_phase_of_tile(intensity: Any, geometry: ReconstructionGeometry, *, boundary: str, eps: float = 1e-3):
    """Classical-TIE probe-frame phase of every pattern of a tile.

    Parameters
    ----------
    intensity : ndarray, shape (3, hx, hy, Qx, Qy)
        Oriented, centred patterns of the tile (with halo).
    geometry : ReconstructionGeometry
    boundary : {"periodic", "mirror"}
    eps : float
        Dark-field regulariser of the TIE (relative to the brightest mean pattern pixel).

    Returns
    -------
    i0 : ndarray, shape (hx, hy, Qx, Qy)
        In-focus intensity.
    phase : ndarray, shape (hx, hy, Qx, Qy)
        φ(q, r̂) in rad, per-q mean set to the probe's phase arg P̃(q).
    """
    xp = get_array_module(intensity)
    didz, i0 = defocus_derivative(intensity, geometry.c10)
    qx, qy = geometry.q_vectors(xp)
    reference = xp.angle(geometry.probe_spectrum(xp))
    phase = tie_phase(didz, i0, qx=qx, qy=qy, wavelength=geometry.wavelength, step=geometry.scan_step,
                      boundary=boundary, center=geometry.detector_center, reference=reference, eps=eps)
    return i0, phase


def footprint(geometry: ReconstructionGeometry, xs: range, ys: range, *, periodic: bool):
    """Object region touched by the windows of scan rows ``xs`` and columns ``ys``.

    Returns
    -------
    offset : (int, int)
        Object pixel of the region's (0, 0).
    shape : (int, int)
        Region size (the whole object for a periodic object).
    """
    shape, _ = geometry.object_grid(periodic=periodic)
    if periodic:
        return (0, 0), shape
    pos = geometry.positions_px(np.array([xs[0], xs[-1]]), np.array([ys[0], ys[-1]]), periodic=False)
    lo = np.floor(pos[0]).astype(int) - np.array(geometry.detector_shape) // 2
    hi = np.floor(pos[1]).astype(int) + np.array(geometry.detector_shape) - np.array(geometry.detector_shape) // 2
    return (int(lo[0]), int(lo[1])), (int(hi[0] - lo[0]), int(hi[1] - lo[1]))


def project_tile(i0: Any, phase: Any, geometry: ReconstructionGeometry, *, xs: range, ys: range,
                 periodic: bool, batch: int = 256, consistency: int = 0, consistency_limit: float = DEFAULT_LIMIT):
    """Overlap-add the exit waves of a block of scan positions onto its object footprint.

    Parameters
    ----------
    i0, phase : ndarray, shape (bx, by, Qx, Qy)
        In-focus intensity and probe-frame phase of the block's positions.
    geometry : ReconstructionGeometry
    xs, ys : range
        Global scan indices of the block's rows and columns.
    periodic : bool
        Periodic object (one scan period).
    batch : int
        Positions per vectorised batch.
    consistency : int
        Diffraction-power consistency iterations (:mod:`flowtie_dask.consistency`): after each projection every
        detector ring's exit-wave amplitudes are scaled so that the projected object's far field holds the
        measured mean intensity of that ring, and the waves are projected again. 0: one projection (the paper's).
    consistency_limit : float
        No ring's amplitudes change by more than this factor (or its inverse).

    Returns
    -------
    offset : (int, int)
    numerator : ndarray, shape footprint, complex128
    illumination : ndarray, shape footprint, float64
    """
    xp = get_array_module(i0)
    offset, shape = footprint(geometry, xs, ys, periodic=periodic)
    ix, iy = np.meshgrid(np.asarray(xs), np.asarray(ys), indexing="ij")
    pos = xp.asarray(geometry.positions_px(ix.ravel(), iy.ravel(), periodic=periodic))
    probe = geometry.probe_spectrum(xp)
    q = i0.shape[-2:]
    i0f = i0.reshape((-1,) + q)
    phf = phase.reshape((-1,) + q)

    def project(gain, index=None):
        """The overlap-add of all positions (or of ``index``) with the ring gains ``gain`` (None: 1)."""
        num = xp.zeros(shape, dtype=xp.complex128)
        ill = xp.zeros(shape, dtype=xp.float64)
        n_pos = i0f.shape[0] if index is None else len(index)
        for s in range(0, n_pos, batch):
            sl = slice(s, s + batch) if index is None else index[s:s + batch]
            waves = exit_wave_spectra(i0f[sl], phf[sl])
            if gain is not None:
                waves *= xp.asarray(gain[rings].astype(np.float32))
            n, d = overlap_add(waves, probe, pos[sl], shape, periodic=periodic, offset=offset,
                               rotation=geometry.window_rotation)
            num += n
            ill += d
        return num, ill

    if int(consistency) <= 0:
        num, ill = project(None)
        return offset, num, ill
    if not consistency_limit >= 1:
        raise ValueError(f"consistency_limit must be ≥ 1 (a factor), got {consistency_limit!r}")
    # rings of scattering angle about the beam: in the detector's frame for the measured patterns and the waves'
    # gains, in the scan's frame (the beam's offset from Q//2 turned with the windows) for the predicted ones
    scan_probe, scan_centre = _scan_frame_probe(geometry, xp) if geometry.window_rotation else \
        (probe, geometry.detector_center)
    rings = ring_index(q, geometry.detector_center)
    scan_rings = ring_index(q, scan_centre)
    n_rings = int(max(rings.max(), scan_rings.max())) + 1
    # a turned detector and the scan's frame share the rings within the detector's inscribed circle only
    full = int(min(min(c, n - 1 - c) for centre in (geometry.detector_center, scan_centre)
                   for c, n in zip(centre, q))) if geometry.window_rotation else None
    # the gains are found on a regular subset of the positions (their windows still overlap densely) and applied
    # to all of them in one last projection; the forward model takes the probe in the scan's frame as evaluated
    # (no window turned by shears, whose small errors would be multiplied into the predicted far fields)
    sub = xp.asarray(statistics_subset(i0.shape[:2]))
    measured = np.zeros(n_rings)
    for s in range(0, len(sub), batch):
        measured += ring_sums(xp.clip(i0f[sub[s:s + batch]], 0, None), rings, length=n_rings)
    total = None
    for _ in range(int(consistency)):
        # a regulariser of round-off size: the probe's tails must not damp the object the forward model sees
        # (O·P stays bounded: |Σψ̂P*/Σ|P|²·P| ≤ max |ψ̂|)
        obj = divide_illumination(*project(total, sub), eps=1e-9)
        predicted = np.zeros_like(measured)
        for s in range(0, len(sub), batch):
            predicted += ring_sums(predicted_patterns(obj, pos[sub[s:s + batch]], scan_probe, offset=offset,
                                                      periodic=periodic), scan_rings, length=n_rings)
        gains = ring_gains(measured, predicted, full=full)
        total = np.clip(gains if total is None else total * gains, 1.0 / consistency_limit, consistency_limit)
    num, ill = project(total)
    return offset, num, ill


def _scan_frame_probe(geometry: ReconstructionGeometry, xp):
    """The focused probe on the scan's axes, (Qx, Qy) complex, centred, and its beam pixel (cx, cy): the
    detector-frame probe turned by ``window_rotation`` as the projection turns its windows (about Q//2, so the
    beam centre's offset from Q//2 turns with it), evaluated directly instead of by shears."""
    qx, qy = geometry.detector_shape
    cx, cy = geometry.detector_center
    dx, dy = geometry.to_scan_frame(cx - qx // 2, cy - qy // 2)
    centre = (qx // 2 + dx, qy // 2 + dy)
    return dataclasses.replace(geometry, window_rotation=0.0, detector_center=centre).probe_spectrum(xp), centre


def reconstruct_tile(intensity: Any, geometry: ReconstructionGeometry, *, xs: range, ys: range,
                     interior: tuple[slice, slice], periodic: bool, boundary: str,
                     phase_method: Callable | None = None, consistency: int = 0):
    """Full per-tile chain: orient → phase of every pattern → exit waves → partial projection.

    Parameters
    ----------
    intensity : ndarray, shape (3, hx, hy, Qx, Qy)
        The tile with its halo, as stored (centred; orientation undone here).
    geometry : ReconstructionGeometry
    xs, ys : range
        Global scan indices of the interior rows/columns.
    interior : (slice, slice)
        The interior within the haloed tile.
    periodic : bool
        Periodic object.
    boundary : {"periodic", "mirror"}
        Boundary condition of the phase solver on this tile.
    phase_method : callable, optional
        ``f(intensity, geometry, boundary=...) -> (i0, phase)``; classical TIE by default.
    consistency : int
        Diffraction-power consistency iterations of the projection (:func:`project_tile`).

    Returns
    -------
    offset, numerator, illumination
        As :func:`project_tile`.
    """
    intensity = geometry.orient(intensity)
    method = phase_method or tie_phase_of_tile
    i0, phase = method(intensity, geometry, boundary=boundary)
    return project_tile(i0[interior], phase[interior], geometry, xs=xs, ys=ys, periodic=periodic,
                        consistency=consistency)

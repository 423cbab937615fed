"""Scan–detector rotation and transpose from the centre-of-mass field (the criterion of py4DSTEM's DPC and
LiberTEM's CoM: the right orientation leaves the field curl-free).

Pure estimators (no dask, zarr or store). Conventions (DESIGN §2, :func:`flowtie_dask.geometry.orient_patterns`):
a detector vector maps to the scan frame as q_scan = R(θ)·S·q_det, S the swap of the detector axes when
``transpose``, R(θ) the rotation by θ from the first axis towards the second. So the (θ, transpose) found here is
what the store's ``detector_rotation``/``detector_transpose`` must hold for ``geometry.orient`` to undo it.

* **Curl.** For a thin specimen the centre of mass is ⟨q⟩ = (1/2π)·|P|² ⋆ ∇φ (FFT e^{−2πiq·r}): a gradient, so
  curl-free in the scan frame. With v = S·⟨q⟩_det and g = R(θ)·v, curl g = cos θ·curl v + sin θ·div v, so
  Σ(curl g)² is a quadratic form in (cos θ, sin θ): the minimising θ is its least eigenvector, in closed form (no
  angle search), defined up to 180°. Each transpose gets its own θ; the one whose field keeps less curl wins.
* **180°.** θ + 180° negates the field and the integrated phase (iCoM). A positive potential makes φ = σ·v_z
  peaked at the atoms over a flat background: the integrated phase of the right orientation is positively
  skewed (:func:`scipy.stats.skew` > 0); the other has the opposite skewness. (Its divergence ∇²φ/2π is sharply
  negative on the atoms, the same criterion seen the other way.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..tie import integrate_gradient

__all__ = ["RotationFit", "orient_field", "curl_divergence", "fit_rotation", "icom_phase"]


@dataclass(frozen=True)
class RotationFit:
    """Scan–detector orientation found from a centre-of-mass field.

    Attributes
    ----------
    rotation : float
        θ in degrees, in [0, 360): what ``detector_rotation`` must hold.
    transpose : bool
        What ``detector_transpose`` must hold.
    uncertainty : float
        1σ of θ in degrees, from the spread of θ found on the four quarters of the scan (÷ √4).
    curl_fraction : float
        Σ curl² / Σ (curl² + div²) of the field in the chosen orientation (0: curl-free).
    curl_fraction_other : float
        The same for the best θ of the other transpose (the margin of the transpose decision).
    skewness : float
        Skewness of the integrated phase in the chosen orientation (> 0; its size is the margin of the 180°
        decision).
    """

    rotation: float
    transpose: bool
    uncertainty: float
    curl_fraction: float
    curl_fraction_other: float
    skewness: float


def orient_field(com, *, rotation: float, transpose: bool, detector_sampling=(1.0, 1.0)) -> np.ndarray:
    """A centre-of-mass field on the detector axes, brought to the scan axes: g = R(θ)·S·(c·dq).

    Parameters
    ----------
    com : ndarray, shape (2, Rx, Ry)
        Centre of mass relative to the beam centre along the detector axes (Qx, Qy), in pixels.
    rotation : float
        θ in degrees.
    transpose : bool
    detector_sampling : (dqx, dqy)
        1/Å per pixel along Qx, Qy (default 1: the result stays in pixels).

    Returns
    -------
    ndarray, shape (2, Rx, Ry), float64
        Along the scan axes, in 1/Å (pixels with the default sampling).
    """
    c = np.asarray(com, dtype=np.float64) * np.asarray(detector_sampling, dtype=np.float64).reshape(2, 1, 1)
    if transpose:
        c = c[::-1]
    t = math.radians(rotation)
    return np.stack([math.cos(t) * c[0] - math.sin(t) * c[1], math.sin(t) * c[0] + math.cos(t) * c[1]])


def curl_divergence(field, *, scan_step=(1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Curl ∂x g_y − ∂y g_x and divergence ∂x g_x + ∂y g_y by central differences, on the interior.

    Parameters
    ----------
    field : ndarray, shape (2, Rx, Ry)
        A vector field along the scan axes (x = Rx, y = Ry).
    scan_step : (sx, sy)
        Å.

    Returns
    -------
    curl, div : ndarray, shape (Rx − 2, Ry − 2)
        Field units per Å.
    """
    g = np.asarray(field, dtype=np.float64)
    sx, sy = scan_step
    dgx_dx = (g[0, 2:, 1:-1] - g[0, :-2, 1:-1]) / (2 * sx)
    dgx_dy = (g[0, 1:-1, 2:] - g[0, 1:-1, :-2]) / (2 * sy)
    dgy_dx = (g[1, 2:, 1:-1] - g[1, :-2, 1:-1]) / (2 * sx)
    dgy_dy = (g[1, 1:-1, 2:] - g[1, 1:-1, :-2]) / (2 * sy)
    return dgy_dx - dgx_dy, dgx_dx + dgy_dy


def _least_curl(v, scan_step) -> tuple[float, float]:
    """θ (degrees, in [0, 180)) that leaves R(θ)·v least curl, and that curl's fraction of curl² + div²."""
    c, d = curl_divergence(v, scan_step=scan_step)
    m = np.array([[np.sum(c * c), np.sum(c * d)], [np.sum(c * d), np.sum(d * d)]])
    w, vec = np.linalg.eigh(m)
    theta = math.degrees(math.atan2(vec[1, 0], vec[0, 0])) % 180.0
    return theta, float(w[0] / max(w.sum(), 1e-300))


def icom_phase(field, *, scan_step, periodic: bool) -> np.ndarray:
    """Phase integrated from a scan-frame centre-of-mass field in 1/Å: φ with ∇φ = 2π·g (rad, zero mean).

    Parameters
    ----------
    field : ndarray, shape (2, Rx, Ry)
        1/Å along the scan axes.
    scan_step : (sx, sy)
        Å.
    periodic : bool
        Periodic integration, or the mirror extension for a non-periodic field of view.

    Returns
    -------
    ndarray, shape (Rx, Ry)
    """
    g = 2 * math.pi * (np.asarray(field, dtype=np.float64) - np.mean(field, axis=(1, 2), keepdims=True))
    hp = 0.0 if periodic else 0.25 / max(n * s for n, s in zip(g.shape[1:], scan_step))
    return np.asarray(integrate_gradient(g[0], g[1], step=tuple(scan_step), kind="spectral",
                                         boundary="periodic" if periodic else "mirror", highpass=hp))


def _skewness(phase, periodic: bool) -> float:
    m = 0 if periodic else max(1, min(phase.shape) // 10)  # the mirror's edges are the least certain
    core = phase[m:phase.shape[0] - m, m:phase.shape[1] - m] if m else phase
    return float(stats.skew(core.ravel()))


def fit_rotation(com, *, scan_step, detector_sampling=(1.0, 1.0), periodic: bool = False) -> RotationFit:
    """Scan–detector rotation and transpose that leave the centre-of-mass field curl-free, 180° resolved.

    Parameters
    ----------
    com : ndarray, shape (2, Rx, Ry)
        Centre of mass of every pattern relative to the beam centre, along the detector axes as stored, in
        pixels; the descan (a plane over the scan, :func:`~flowtie_dask.calibrate.centre.descan_plane`) is best
        removed first. Rx, Ry ≥ 8.
    scan_step : (sx, sy)
        Å.
    detector_sampling : (dqx, dqy)
        1/Å per pixel.
    periodic : bool
        The scan covers whole periods (periodic integration for the 180° decision).

    Returns
    -------
    RotationFit

    Raises
    ------
    ValueError
        A field too small, not finite, or without contrast (one line).
    """
    c = np.asarray(com, dtype=np.float64)
    if c.ndim != 3 or c.shape[0] != 2 or min(c.shape[1:]) < 8:
        raise ValueError(f"the centre-of-mass field must have shape (2, Rx, Ry) with Rx, Ry ≥ 8, got {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("the centre-of-mass field holds NaN or Inf (an empty pattern?)")
    c = c - c.mean(axis=(1, 2), keepdims=True)
    if not np.any(np.abs(c) > 1e-12 * max(1.0, float(np.abs(np.asarray(com)).max()))):
        raise ValueError("the centre-of-mass field is constant: no specimen contrast to find the rotation from")
    results = {}
    for transpose in (False, True):
        v = orient_field(c, rotation=0.0, transpose=transpose, detector_sampling=detector_sampling)
        results[transpose] = _least_curl(v, scan_step)
    transpose = results[True][1] < results[False][1]
    theta, frac = results[transpose]
    g = orient_field(c, rotation=theta, transpose=transpose, detector_sampling=detector_sampling)
    skew = _skewness(icom_phase(g, scan_step=scan_step, periodic=periodic), periodic)
    if skew < 0:
        theta, skew = theta + 180.0, -skew
    # spread over the four quarters of the scan (each resolved to the θ nearest the whole scan's)
    rx, ry = c.shape[1:]
    v = orient_field(c, rotation=0.0, transpose=transpose, detector_sampling=detector_sampling)
    quarters = []
    for xs in (slice(0, rx // 2 + 1), slice(rx // 2 - 1, rx)):
        for ys in (slice(0, ry // 2 + 1), slice(ry // 2 - 1, ry)):
            t, _ = _least_curl(v[:, xs, ys], scan_step)
            quarters.append(theta + ((t - theta + 90.0) % 180.0 - 90.0))
    unc = float(np.std(quarters, ddof=1) / math.sqrt(len(quarters)))
    return RotationFit(rotation=float(theta % 360.0), transpose=bool(transpose), uncertainty=unc,
                       curl_fraction=frac, curl_fraction_other=results[not transpose][1], skewness=skew)

"""Beam centre: the bright-field disk of the mean pattern, sub-pixel, and its drift over the scan (descan).

Pure estimators (NumPy arrays in, numbers out; no dask, zarr or store). Pixel coordinates follow the package's
detector convention: pixel j sits at coordinate j (its centre), along the detector's first (Qx) and second (Qy)
axes of the patterns *as stored* (before :func:`flowtie_dask.geometry.orient_patterns`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize, special

__all__ = ["DiskFit", "DescanPlane", "fit_bright_field_disk", "threshold_disk", "descan_plane"]


@dataclass(frozen=True)
class DiskFit:
    """The bright-field disk of a mean pattern.

    Attributes
    ----------
    centre : (float, float)
        Disk centre in detector pixels (Qx, Qy), from the soft-edged disk fit.
    radius : float
        Disk radius in pixels.
    edge : float
        Edge width σ of the fitted soft disk in pixels (0.5·erfc profile).
    uncertainty : (float, float)
        1σ of the centre in pixels: the fit's own standard error combined with half the distance between the fit
        and the intensity-weighted centre of mass of the disk (an independent estimate, the fit's start), so
        systematic structure counts too.
    threshold_centre : (float, float)
        Unweighted centre of the thresholded disk's pixels (the fit starts from the intensity-weighted centre of
        mass of that region, which is finer).
    threshold_radius : float
        √(area/π) of the thresholded disk.
    inside, outside : float
        Fitted levels inside and outside the disk (the pattern's units).
    """

    centre: tuple[float, float]
    radius: float
    edge: float
    uncertainty: tuple[float, float]
    threshold_centre: tuple[float, float]
    threshold_radius: float
    inside: float
    outside: float


@dataclass(frozen=True)
class DescanPlane:
    """A plane fitted to the per-position centre of mass: the beam's drift over the scan (descan).

    c_k(i, j) = origin_k + slope[k][0]·(i − (Rx−1)/2) + slope[k][1]·(j − (Ry−1)/2), k = detector axis.

    Attributes
    ----------
    origin : (float, float)
        Centre of mass at the middle of the scan, detector pixels.
    slope : ((float, float), (float, float))
        Detector pixels per scan step, ``slope[k][a]`` along scan axis a for detector axis k.
    span : float
        Largest distance (pixels) the plane moves the centre away from ``origin`` over the scan (at a corner).
    residual : float
        RMS of the centre of mass about the plane, pixels (specimen signal and noise).
    """

    origin: tuple[float, float]
    slope: tuple[tuple[float, float], tuple[float, float]]
    span: float
    residual: float


def _check_pattern(pattern) -> np.ndarray:
    p = np.asarray(pattern, dtype=np.float64)
    if p.ndim != 2 or min(p.shape) < 8:
        raise ValueError(f"the mean pattern must be a 2D array of at least 8×8 pixels, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("the mean pattern holds NaN or Inf; check the store (flowtie-dask info --check)")
    if not p.max() > p.min():
        raise ValueError("the mean pattern is constant (an empty or blank scan): no bright-field disk to fit")
    return p


def threshold_disk(pattern) -> tuple[tuple[float, float], float, np.ndarray]:
    """Centre of mass and radius of the thresholded bright-field disk.

    The threshold is half-way between the median levels inside and outside Otsu's threshold; the disk is the
    largest connected region above it.

    Parameters
    ----------
    pattern : ndarray, shape (Qx, Qy)
        Mean diffraction pattern (any intensity units).

    Returns
    -------
    centre : (float, float)
        Pixels, unweighted centre of mass of the disk's pixels.
    radius : float
        √(area/π), pixels.
    mask : ndarray of bool, shape (Qx, Qy)
    """
    from skimage.filters import threshold_otsu

    p = _check_pattern(pattern)
    t0 = threshold_otsu(p)
    level = 0.5 * (np.median(p[p > t0]) + np.median(p[p <= t0]))
    labels, n = ndimage.label(p > level)
    if n == 0:
        raise ValueError("no bright-field disk found in the mean pattern (nothing above the threshold)")
    sizes = ndimage.sum_labels(np.ones_like(p), labels, index=np.arange(1, n + 1))
    mask = labels == 1 + int(np.argmax(sizes))
    area = float(mask.sum())
    if area < 12:
        raise ValueError(f"the bright-field disk of the mean pattern covers only {area:g} pixels; a disk of a few "
                         "pixels' radius or more is needed to find its centre")
    ii, jj = np.nonzero(mask)
    touches = ii.min() == 0 or jj.min() == 0 or ii.max() == p.shape[0] - 1 or jj.max() == p.shape[1] - 1
    if touches:
        raise ValueError("the bright-field disk of the mean pattern touches the detector's edge; the beam centre "
                         "cannot be fitted (is the detector centred on the beam?)")
    return (float(ii.mean()), float(jj.mean())), math.sqrt(area / math.pi), mask


_SUB = (np.arange(3) - 1) / 3.0  # 3×3 samples over each pixel's area


def _soft_disk(params, ii, jj):
    """The soft-edged disk averaged over each pixel's area (so the fit is smooth in the centre even for a hard
    edge)."""
    ci, cj, radius, edge, inside, outside = params
    di, dj = np.meshgrid(_SUB, _SUB, indexing="ij")
    rho = np.hypot(ii[:, None] + di.ravel() - ci, jj[:, None] + dj.ravel() - cj)
    step = 0.5 * special.erfc((rho - radius) / (math.sqrt(2.0) * edge))
    return outside + (inside - outside) * step.mean(axis=1)


def fit_bright_field_disk(pattern, *, band: float = 4.0) -> DiskFit:
    """Sub-pixel centre and radius of the bright-field disk of a mean pattern.

    The thresholded disk (:func:`threshold_disk`) gives the region; its intensity-weighted centre of mass starts a
    least-squares fit of a soft-edged disk, ``outside + (inside − outside)·½·erfc((ρ − R)/(√2·σ))`` averaged over
    each pixel's area, to the pixels within ``band`` pixels of the disk's edge (the interior's structure —
    Bragg-disk overlaps, thickness contrast — is left out).

    Parameters
    ----------
    pattern : ndarray, shape (Qx, Qy)
        Mean diffraction pattern as stored (any intensity units).
    band : float
        Half-width in pixels of the annulus around the thresholded edge that the fit uses.

    Returns
    -------
    DiskFit

    Raises
    ------
    ValueError
        No disk, a disk touching the detector edge, or a fit that does not converge (one line).
    """
    p = _check_pattern(pattern)
    (ti, tj), r0, mask = threshold_disk(p)
    ii, jj = np.indices(p.shape, dtype=np.float64)
    # start: intensity-weighted centre of the disk and its edge (the mask dilated by 2 px), above the outside level
    region = ndimage.binary_dilation(mask, iterations=2)
    w = np.clip(p - np.median(p[~region]), 0, None) * region
    ci, cj = (float((w * ii).sum() / w.sum()), float((w * jj).sum() / w.sum())) if w.sum() > 0 else (ti, tj)
    near = np.abs(np.hypot(ii - ci, jj - cj) - r0) <= band
    inside0 = float(np.median(p[np.hypot(ii - ci, jj - cj) < max(r0 - band, 0.5 * r0)]))
    outside0 = float(np.median(p[np.hypot(ii - ci, jj - cj) > r0 + band])) if np.any(
        np.hypot(ii - ci, jj - cj) > r0 + band) else float(p.min())
    x0 = np.array([ci, cj, r0, 0.5, inside0, outside0])
    lo = [ci - band, cj - band, max(r0 - band, 1.0), 0.02, -np.inf, -np.inf]
    hi = [ci + band, cj + band, r0 + band, band, np.inf, np.inf]
    iv, jv, pv = ii[near], jj[near], p[near]
    scale = max(abs(inside0 - outside0), 1e-300)
    fit = optimize.least_squares(lambda x: (_soft_disk(x, iv, jv) - pv) / scale, x0, bounds=(lo, hi),
                                 x_scale=[1, 1, 1, 0.5, 1, 1], method="trf")
    if not fit.success or not np.all(np.isfinite(fit.x)):
        raise ValueError(f"the soft-edged disk fit of the mean pattern did not converge ({fit.message})")
    dof = max(pv.size - fit.x.size, 1)
    s2 = 2 * fit.cost / dof
    try:
        cov = np.linalg.inv(fit.jac.T @ fit.jac) * s2
        stat = np.sqrt(np.clip(np.diag(cov)[:2], 0, None))
    except np.linalg.LinAlgError:
        stat = np.array([np.inf, np.inf])
    centre = fit.x[:2]
    systematic = np.abs(centre - np.array([ci, cj])) / 2  # against the weighted centre of mass
    unc = np.hypot(stat, systematic)
    return DiskFit(centre=(float(centre[0]), float(centre[1])), radius=float(fit.x[2]), edge=float(fit.x[3]),
                   uncertainty=(float(unc[0]), float(unc[1])), threshold_centre=(ti, tj), threshold_radius=r0,
                   inside=float(fit.x[4]), outside=float(fit.x[5]))


def descan_plane(com) -> DescanPlane:
    """Least-squares plane through the per-position centre of mass (the beam's drift over the scan).

    Parameters
    ----------
    com : ndarray, shape (2, Rx, Ry)
        Centre of mass of every pattern in detector pixels (Qx, Qy), as stored.

    Returns
    -------
    DescanPlane
    """
    c = np.asarray(com, dtype=np.float64)
    if c.ndim != 3 or c.shape[0] != 2 or min(c.shape[1:]) < 2:
        raise ValueError(f"the centre-of-mass field must have shape (2, Rx, Ry) with Rx, Ry ≥ 2, got {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("the centre-of-mass field holds NaN or Inf (an empty pattern?)")
    rx, ry = c.shape[1:]
    ii, jj = np.meshgrid(np.arange(rx) - (rx - 1) / 2, np.arange(ry) - (ry - 1) / 2, indexing="ij")
    design = np.stack([np.ones(ii.size), ii.ravel(), jj.ravel()], axis=1)
    coef, *_ = np.linalg.lstsq(design, c.reshape(2, -1).T, rcond=None)  # (3, 2)
    fitted = (design @ coef).T
    residual = float(np.sqrt(np.mean(np.sum((c.reshape(2, -1) - fitted) ** 2, axis=0))))
    corners = np.array([[a, b] for a in (-(rx - 1) / 2, (rx - 1) / 2) for b in (-(ry - 1) / 2, (ry - 1) / 2)])
    span = float(np.max(np.hypot(*(corners @ coef[1:]).T)))
    slope = tuple((float(coef[1, k]), float(coef[2, k])) for k in range(2))
    return DescanPlane(origin=(float(coef[0, 0]), float(coef[0, 1])), slope=slope, span=span, residual=residual)

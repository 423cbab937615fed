"""Reductions of a block of patterns that calibration needs: centre of mass in pixels and virtual-detector images.

Pure array code (no dask, zarr or store): a block of patterns in, per-position numbers out, so the store is read
block by block and never whole. Pixel coordinates are those of the detector as stored (pixel j at coordinate j).
"""

from __future__ import annotations

import numpy as np

__all__ = ["VIRTUAL_IMAGES", "centre_of_mass_px", "detector_masks", "virtual_images"]

#: the virtual images the drift between scans is measured on, in this order
VIRTUAL_IMAGES = ("bright field", "annular dark field", "CoM magnitude")


def centre_of_mass_px(patterns) -> tuple[np.ndarray, np.ndarray]:
    """Centre of mass of every pattern in detector pixels, and its total.

    Parameters
    ----------
    patterns : ndarray, shape (..., Qx, Qy)
        Intensities as stored (any units, ≥ 0).

    Returns
    -------
    com : ndarray, shape (2, ...), float64
        ⟨i⟩, ⟨j⟩ in pixels (NaN where a pattern's total is 0).
    total : ndarray, shape (...), float64
    """
    p = np.asarray(patterns)
    rows = p.sum(axis=-1, dtype=np.float64)
    cols = p.sum(axis=-2, dtype=np.float64)
    total = rows.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        com = np.stack([rows @ np.arange(p.shape[-2], dtype=np.float64),
                        cols @ np.arange(p.shape[-1], dtype=np.float64)]) / np.where(total > 0, total, np.nan)
    return com, total


def detector_masks(shape, centre, radius) -> dict[str, np.ndarray]:
    """Virtual detectors about the beam centre.

    Parameters
    ----------
    shape : (Qx, Qy)
    centre : (float, float)
        Beam centre in pixels.
    radius : float
        Bright-field disk radius in pixels.

    Returns
    -------
    dict
        ``"bright field"``: ρ ≤ R; ``"annular dark field"``: 1.15·R ≤ ρ ≤ the largest circle about the centre
        that fits the detector (float64 weights of 0 and 1).

    Raises
    ------
    ValueError
        When the detector holds no dark-field annulus (the disk fills it).
    """
    ii, jj = np.indices(tuple(shape), dtype=np.float64)
    rho = np.hypot(ii - centre[0], jj - centre[1])
    outer = min(centre[0], centre[1], shape[0] - 1 - centre[0], shape[1] - 1 - centre[1])
    inner = 1.15 * radius
    if outer < inner + 1:
        raise ValueError(f"the detector holds no dark-field annulus outside the bright-field disk (radius "
                         f"{radius:.1f} px, {outer:.1f} px from the centre to the nearest edge)")
    return {"bright field": (rho <= radius).astype(np.float64),
            "annular dark field": ((rho >= inner) & (rho <= outer)).astype(np.float64)}


def virtual_images(patterns, masks: dict[str, np.ndarray], centre) -> dict[str, np.ndarray]:
    """Virtual images of a block of patterns: each mask's sum, and the magnitude of the centre of mass.

    Parameters
    ----------
    patterns : ndarray, shape (..., Qx, Qy)
    masks : dict of name → ndarray, shape (Qx, Qy)
        From :func:`detector_masks`.
    centre : (float, float)
        Beam centre in pixels (the centre of mass is measured from it).

    Returns
    -------
    dict of name → ndarray, shape (...), float64
        The masks' names and ``"CoM magnitude"`` (pixels), in the order of :data:`VIRTUAL_IMAGES`.
    """
    p = np.asarray(patterns)
    flat = p.reshape(p.shape[:-2] + (-1,))
    out = {name: flat @ m.ravel().astype(p.dtype) for name, m in masks.items()}
    com, _ = centre_of_mass_px(p)
    out["CoM magnitude"] = np.hypot(com[0] - centre[0], com[1] - centre[1])
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}

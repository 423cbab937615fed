"""Drift of the defocused scans against the focus scan, from virtual images all three scans share.

Pure estimators (no dask, zarr or store). Convention (:class:`~flowtie_dask.store.ScanMetadata` ``scan_drift``):
scan position (i, j) of scan s sees the specimen at focus-scan position (i, j) + d_s, so a virtual image of scan s
is I_s(x) = I_focus(x + d_s); the focus scan's own d is (0, 0).

Each shift is measured by upsampled cross-correlation (:func:`skimage.registration.phase_cross_correlation`) of
images scaled to zero mean and unit variance: a whole-pixel start (the strong correlation peak nearest zero, so a
crystal's lattice translations do not alias the drift), then iterative refinement — the moving image is shifted
by the estimate so far (exact Fourier shift when the field of view is periodic, cubic spline otherwise), both are
cropped to their common interior (non-periodic) and tapered by a Tukey window, and the residual shift is added —
so the window, which pulls a correlation peak towards zero, only ever sees a residual near zero.

Each image's estimate carries its own noise σ_i, the linearised error of the windowed correlation from the
residual between the registered images (:func:`register_shift`); the images are combined by inverse-variance
weights, and their spread about the combination is the uncertainty. They are *inconsistent* when one disagrees
with the combination by more than the tolerance (¼ scan step by default) beyond twice its own σ_i — at low dose
the bright-field disk sum, whose contrast is the small dark-field fraction on top of the whole beam's shot noise,
is a far noisier estimate than the dark-field sum or the centre-of-mass magnitude, and is weighted accordingly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.signal.windows import tukey

__all__ = ["Registration", "DriftFit", "register_shift", "fit_scan_drift", "shift_image"]


@dataclass(frozen=True)
class Registration:
    """One image's shift against the reference.

    Attributes
    ----------
    shift : (float, float)
        s with moving(x − s) ≈ reference(x), pixels (scan steps).
    sigma : (float, float)
        1σ of ``shift`` from the noise: σ² = var(a − b)·Σw⁴g² / (Σw²g²)² per axis (a, b the registered, scaled
        images, g the reference's gradient, w the window), the error of the correlation peak linearised about the
        solution.
    correlation : float
        Correlation coefficient of the registered images over their common interior (1: identical).
    """

    shift: tuple[float, float]
    sigma: tuple[float, float]
    correlation: float


@dataclass(frozen=True)
class DriftFit:
    """Drift of each scan against the focus scan.

    Attributes
    ----------
    steps : ((float, float), ×3)
        d_s in scan steps along Rx, Ry, in the store's scan order (focus (0, 0)): the inverse-variance weighted
        mean over the virtual images.
    angstrom : ((float, float), ×3)
        d_s in Å (steps × scan step).
    uncertainty : ((float, float), ×3)
        1σ in Å: the weighted spread of the images' estimates about ``steps`` combined with the weighted mean's
        own σ (at least 1/upsample of a step).
    per_image : dict of name → list of 3 :class:`Registration`
        Each virtual image's estimate, in scan steps (the focus scan's is zero).
    disagreement : float
        Largest distance (scan steps) of one image's estimate from ``steps`` beyond twice its own σ.
    consistent : bool
        ``disagreement`` ≤ ``tolerance``.
    tolerance : float
        Scan steps.
    """

    steps: tuple
    angstrom: tuple
    uncertainty: tuple
    per_image: dict
    disagreement: float
    consistent: bool
    tolerance: float


def _standardise(image) -> np.ndarray:
    a = np.asarray(image, dtype=np.float64)
    a = a - a.mean()
    s = a.std()
    return a / s if s > 0 else a


def shift_image(image, shift, *, periodic: bool) -> np.ndarray:
    """``image`` moved by ``shift`` (scan steps): out(x) = image(x − shift).

    Periodic: exact Fourier shift (band-limited, wrapped); otherwise a cubic spline with the edge values extended.

    Parameters
    ----------
    image : ndarray, shape (Rx, Ry)
    shift : (float, float)
    periodic : bool

    Returns
    -------
    ndarray, shape (Rx, Ry), float64
    """
    a = np.asarray(image, dtype=np.float64)
    shift = tuple(float(s) for s in shift)
    if periodic:
        return np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(a), shift)).real
    return ndimage.shift(a, shift, order=3, mode="nearest")


def _tapered(a) -> np.ndarray:
    return _standardise(a) * _window(np.shape(a))


def _integer_shift(ref, mov, *, peak_tie: float = 0.1) -> np.ndarray:
    """Whole-pixel start: of the cross-correlation's local maxima within ``peak_tie`` of the highest, the one
    nearest zero shift (a crystal's lattice translations give peaks of nearly one height: the drift is taken to
    be the smallest of them)."""
    a, b = _tapered(ref), _tapered(mov)
    xc = np.fft.ifft2(np.fft.fft2(a) * np.conj(np.fft.fft2(b))).real
    peaks = (ndimage.maximum_filter(xc, size=3, mode="wrap") == xc) & (xc >= xc.max() - peak_tie * abs(xc.max()))
    idx = np.argwhere(peaks).astype(np.float64)
    n = np.array(xc.shape, dtype=np.float64)
    idx = np.where(idx > n // 2, idx - n, idx)
    return idx[np.argmin(np.hypot(idx[:, 0], idx[:, 1]))]


def _window(shape) -> np.ndarray:
    return np.outer(tukey(shape[0], 0.5), tukey(shape[1], 0.5))


def _noise_sigma(a, b) -> tuple[tuple[float, float], float]:
    """σ of the windowed correlation's shift (see :class:`Registration`) and the correlation coefficient."""
    a, b = _standardise(a), _standardise(b)
    w2 = _window(a.shape) ** 2
    var = float(np.var(a - b))
    sig = []
    for g in np.gradient(a):
        den = float(np.sum(w2 * g * g))
        sig.append(float(np.sqrt(var * np.sum(w2 * w2 * g * g)) / den) if den > 0 else float("inf"))
    return (sig[0], sig[1]), float(np.mean(a * b))


def register_shift(reference, moving, *, periodic: bool, upsample: int = 100, iterations: int = 5) -> Registration:
    """Sub-pixel shift s with moving(x − s) ≈ reference(x), in pixels (scan steps), and its noise.

    A whole-pixel start (the strong correlation peak nearest zero shift), then up to ``iterations`` refinements:
    the moving image is shifted by the estimate so far, both images are cropped to their common interior (not
    when periodic), tapered by a Tukey window (α = ½), and the residual from
    :func:`skimage.registration.phase_cross_correlation` (upsampled, no spectral normalisation) is added.

    Parameters
    ----------
    reference, moving : ndarray, shape (Rx, Ry)
        Two virtual images (any units; each is scaled to zero mean and unit variance).
    periodic : bool
        The field of view covers whole periods (exact Fourier shifts, no cropping).
    upsample : int
        Upsampling of the correlation peak (precision 1/upsample pixel).
    iterations : int
        Most refinements (they stop when the residual is below half the precision).

    Returns
    -------
    Registration
        With ``reference = focus`` and ``moving = scan s``, ``shift`` is d_s of the module's convention.

    Raises
    ------
    ValueError
        Images of different shapes, smaller than 8×8, not finite, or a shift that leaves no overlap.
    """
    from skimage.registration import phase_cross_correlation

    ref, mov = np.asarray(reference, dtype=np.float64), np.asarray(moving, dtype=np.float64)
    if ref.shape != mov.shape or ref.ndim != 2 or min(ref.shape) < 8:
        raise ValueError(f"virtual images must be two 2D arrays of one shape, at least 8×8, got {ref.shape} and "
                         f"{mov.shape}")
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(mov))):
        raise ValueError("a virtual image holds NaN or Inf")
    ref, mov = _standardise(ref), _standardise(mov)
    n = np.array(ref.shape)
    total = _integer_shift(ref, mov)

    def crop_of(shift):
        margin = np.zeros(2, int) if periodic else np.ceil(np.abs(shift)).astype(int) + 2
        if np.any(n - 2 * margin < 8):
            raise ValueError(f"a drift of {shift[0]:.1f}, {shift[1]:.1f} scan steps leaves too little overlap of "
                             f"the {n[0]}×{n[1]} scans to register")
        return slice(margin[0], n[0] - margin[0]), slice(margin[1], n[1] - margin[1])

    for _ in range(max(1, iterations)):
        crop = crop_of(total)
        moved = shift_image(mov, total, periodic=periodic)
        step, _, _ = phase_cross_correlation(_tapered(ref[crop]), _tapered(moved[crop]), upsample_factor=upsample,
                                             normalization=None)
        total = total + np.asarray(step, dtype=np.float64)
        if np.max(np.abs(step)) < 0.5 / upsample:
            break
    crop = crop_of(total)
    sigma, corr = _noise_sigma(ref[crop], shift_image(mov, total, periodic=periodic)[crop])
    return Registration(shift=(float(total[0]), float(total[1])), sigma=sigma, correlation=corr)


def fit_scan_drift(images: dict, *, focus_index: int, scan_step, periodic: bool, upsample: int = 100,
                   tolerance: float = 0.25) -> DriftFit:
    """Drift of every scan against the focus scan, combined over and checked across virtual images.

    Parameters
    ----------
    images : dict of name → ndarray, shape (3, Rx, Ry)
        Virtual images of the three scans (e.g. bright field, annular dark field, CoM magnitude), in the store's
        scan order; at least one.
    focus_index : int
        The focus scan's index (its drift is (0, 0)).
    scan_step : (sx, sy)
        Å.
    periodic : bool
        See :func:`register_shift`.
    upsample : int
    tolerance : float
        Largest disagreement, in scan steps beyond an image's own 2σ, for the drift to count as consistent.

    Returns
    -------
    DriftFit
    """
    if not images:
        raise ValueError("no virtual images to measure the drift between scans on")
    zero = Registration(shift=(0.0, 0.0), sigma=(0.0, 0.0), correlation=1.0)
    per_image = {}
    for name, stack in images.items():
        stack = np.asarray(stack, dtype=np.float64)
        if stack.ndim != 3 or stack.shape[0] != 3:
            raise ValueError(f"virtual image {name!r} must have shape (3, Rx, Ry), got {stack.shape}")
        per_image[name] = [zero if s == focus_index else
                           register_shift(stack[focus_index], stack[s], periodic=periodic, upsample=upsample)
                           for s in range(3)]
    est = np.array([[r.shift for r in regs] for regs in per_image.values()])  # (n_images, 3, 2)
    floor = 1.0 / upsample
    sig = np.maximum(np.array([[r.sigma for r in regs] for regs in per_image.values()]), floor)
    w = 1.0 / sig**2
    mean = np.sum(w * est, axis=0) / np.sum(w, axis=0)
    spread = np.sqrt(np.sum(w * (est - mean) ** 2, axis=0) / np.sum(w, axis=0))
    unc = np.sqrt(spread**2 + 1.0 / np.sum(w, axis=0))
    unc = np.where(np.arange(3)[:, None] == focus_index, 0.0, np.maximum(unc, floor))
    excess = np.hypot(*np.moveaxis(est - mean, -1, 0)) - 2 * np.hypot(*np.moveaxis(sig, -1, 0))
    disagreement = float(max(0.0, excess.max())) if len(est) > 1 else 0.0
    step = np.asarray(scan_step, dtype=np.float64)
    as_tuple = lambda a: tuple((float(x), float(y)) for x, y in a)  # noqa: E731
    return DriftFit(steps=as_tuple(mean), angstrom=as_tuple(mean * step), uncertainty=as_tuple(unc * step),
                    per_image=per_image, disagreement=disagreement, consistent=bool(disagreement <= tolerance),
                    tolerance=float(tolerance))

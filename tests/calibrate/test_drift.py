"""Drift of the defocused scans against the focus scan: upsampled cross-correlation of virtual images."""

import numpy as np
import pytest
from scipy import ndimage

from flowtie_dask.calibrate import (detector_masks, fit_bright_field_disk, fit_scan_drift, register_shift,
                                    shift_image, virtual_images)

from .conftest import noisy
from .synthetic import clean_series, spoil_detector

DRIFTS = [((0.37, -1.21), (0.0, 0.0), (-2.46, 0.83)),
          ((1.73, 2.25), (0.0, 0.0), (-0.12, -0.88)),
          ((-0.64, 0.05), (0.0, 0.0), (0.5, -2.5))]


def _images(raw):
    disk = fit_bright_field_disk(raw[1].mean(axis=(0, 1)))
    masks = detector_masks(raw.shape[-2:], disk.centre, disk.radius)
    per_scan = [virtual_images(raw[s], masks, disk.centre) for s in range(3)]
    return {k: np.stack([p[k] for p in per_scan]) for k in per_scan[0]}


@pytest.mark.parametrize("drift", DRIFTS)
@pytest.mark.parametrize("crop", [None, (4, 4, 40)])
def test_drift_within_a_tenth_of_a_scan_step_at_1e5_electrons(drift, crop):
    """Each defocused scan simulated at the focus grid + a known sub-pixel drift; periodic (the whole cell) and a
    non-periodic 40×40 window; rotated detector, offset beam, Poisson noise at 1e5 e⁻ per pattern."""
    inten, plan = clean_series(drift)
    if crop:
        x0, y0, n = crop
        inten = inten[:, x0:x0 + n, y0:y0 + n]
    raw, _ = spoil_detector(inten, offset=(0.6, -1.2), rotation=-31.0)
    images = _images(noisy(raw, 1e5, seed=3))
    fit = fit_scan_drift(images, focus_index=1, scan_step=plan.scan_step, periodic=crop is None)
    err = np.asarray(fit.steps) - np.asarray(drift)
    assert np.all(np.abs(err) < 0.1), (fit.steps, drift)  # measured: ≤ 0.03 step
    assert fit.consistent, fit.disagreement
    np.testing.assert_allclose(fit.angstrom, np.asarray(fit.steps) * np.asarray(plan.scan_step))
    assert fit.steps[1] == (0.0, 0.0) and fit.uncertainty[1] == (0.0, 0.0)
    unc = np.asarray(fit.uncertainty)[[0, 2]] / plan.scan_step[0]
    assert np.all(unc < 0.1) and np.all(np.abs(err[[0, 2]]) < 4 * unc + 0.01), (err, unc)
    for name, regs in fit.per_image.items():  # each image on its own is sub-pixel too
        for s in (0, 2):
            assert np.all(np.abs(np.subtract(regs[s].shift, drift[s])) < 0.3), (name, s, regs[s])
    # the bright-field disk sum is the noisiest of the three (its contrast sits on the whole beam's shot noise)
    sig = {k: np.hypot(*v[0].sigma) for k, v in fit.per_image.items()}
    assert sig["bright field"] > sig["annular dark field"]


def test_the_sign_convention_of_scan_drift():
    """scan s at position x sees the focus scan's x + d: I_s(x) = I_focus(x + d) gives d (not −d)."""
    rng = np.random.default_rng(0)
    focus = ndimage.gaussian_filter(rng.standard_normal((48, 48)), 2, mode="wrap")
    d = np.array([1.37, -0.62])
    moved = shift_image(focus, -d, periodic=True)  # moved(x) = focus(x + d)
    for periodic in (False, True):
        r = register_shift(focus, moved, periodic=periodic)
        np.testing.assert_allclose(r.shift, d, atol=0.02)
        assert r.correlation > 0.99
    np.testing.assert_allclose(shift_image(moved, r.shift, periodic=True), focus, atol=1e-3)


def test_images_that_disagree_are_inconsistent():
    rng = np.random.default_rng(1)
    focus = ndimage.gaussian_filter(rng.standard_normal((40, 40)), 1.5, mode="wrap")

    def series(d):
        return np.stack([shift_image(focus, -np.asarray(d), periodic=True), focus,
                         shift_image(focus, np.asarray(d), periodic=True)])

    good = fit_scan_drift({"a": series((0.4, 0.1)), "b": series((0.42, 0.08))}, focus_index=1,
                          scan_step=(0.2, 0.2), periodic=True)
    assert good.consistent
    bad = fit_scan_drift({"a": series((0.4, 0.1)), "b": series((1.2, 0.1))}, focus_index=1, scan_step=(0.2, 0.2),
                         periodic=True)
    assert not bad.consistent and bad.disagreement > 0.25
    np.testing.assert_allclose(bad.steps[0], (0.8, 0.1), atol=0.05)  # the inverse-variance mean (equal noise)
    assert bad.uncertainty[0][0] > 0.3 * 0.2  # the spread counts in the uncertainty (Å)


def test_a_crystal_s_lattice_translation_is_not_taken_for_drift():
    """A periodic crystal correlates as well one period away: the drift is the smallest of those shifts."""
    inten, plan = clean_series(DRIFTS[0])
    images = _images(inten)
    fit = fit_scan_drift(images, focus_index=1, scan_step=plan.scan_step, periodic=True)
    np.testing.assert_allclose(fit.steps, DRIFTS[0], atol=0.05)


def test_bad_images_are_refused_in_one_line():
    a = np.zeros((10, 10))
    for args, words in [((a, np.zeros((10, 12))), "one shape"), ((np.zeros((4, 4)), np.zeros((4, 4))), "8×8"),
                        ((a, np.full((10, 10), np.nan)), "NaN")]:
        with pytest.raises(ValueError, match=words) as info:
            register_shift(*args, periodic=True)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="no virtual images"):
        fit_scan_drift({}, focus_index=1, scan_step=(1, 1), periodic=True)
    with pytest.raises(ValueError, match=r"shape \(3, Rx, Ry\)"):
        fit_scan_drift({"x": np.zeros((2, 10, 10))}, focus_index=1, scan_step=(1, 1), periodic=True)

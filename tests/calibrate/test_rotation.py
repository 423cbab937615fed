"""Scan–detector rotation and transpose: least curl of the centre-of-mass field, 180° by the iCoM phase."""

import numpy as np
import pytest
from scipy import ndimage

from flowtie_dask.calibrate import descan_plane, fit_bright_field_disk, fit_rotation
from flowtie_dask.calibrate.virtual import centre_of_mass_px
from flowtie_dask.geometry import ReconstructionGeometry

from .conftest import noisy
from .synthetic import spoil_detector

CASES = [(0.0, False), (17.5, False), (90.0, False), (-31.0, False), (143.2, False), (200.0, False),
         (0.0, True), (63.0, True), (-75.3, True), (180.0, True), (271.3, True)]


def _relative_com(raw):
    """Centre of mass minus its fitted plane (what calibrate_store gives fit_rotation)."""
    com, _ = centre_of_mass_px(raw)
    plane = descan_plane(com)
    rx, ry = com.shape[1:]
    ii, jj = np.meshgrid(np.arange(rx) - (rx - 1) / 2, np.arange(ry) - (ry - 1) / 2, indexing="ij")
    return com - np.stack([o + s[0] * ii + s[1] * jj for o, s in zip(plane.origin, plane.slope)])


def _angle_error(a, b):
    return abs((a - b + 180.0) % 360.0 - 180.0)


@pytest.mark.parametrize("rotation,transpose", CASES)
def test_rotation_and_transpose_within_a_degree_at_1e5_electrons(clean, rotation, transpose):
    inten, plan = clean
    raw, _ = spoil_detector(inten[1], offset=(0.4, -0.9), rotation=rotation, transpose=transpose)
    raw = noisy(raw, 1e5)
    m = plan.metadata
    fit = fit_rotation(_relative_com(raw), scan_step=m.scan_step, detector_sampling=m.detector_sampling,
                       periodic=True)
    assert fit.transpose == transpose
    assert _angle_error(fit.rotation, rotation) < 1.0, fit  # measured: ≤ 0.2°
    assert fit.uncertainty < 0.5
    assert fit.curl_fraction < 0.05 and fit.curl_fraction_other > 5 * fit.curl_fraction
    assert fit.skewness > 1.0


def test_a_non_periodic_field_of_view(clean):
    inten, plan = clean
    raw, _ = spoil_detector(inten[1][5:41, 3:43], rotation=-31.0)
    m = plan.metadata
    fit = fit_rotation(_relative_com(noisy(raw, 1e5)), scan_step=m.scan_step, detector_sampling=m.detector_sampling,
                       periodic=False)
    assert not fit.transpose and _angle_error(fit.rotation, -31.0) < 1.0, fit


def test_the_180_degree_choice_follows_the_sign_of_the_field(clean):
    """θ + 180° negates the field: a negated field (a negative potential, or a detector read backwards) is found
    180° away, so the choice is made by the data's sign, not by a convention of the fit."""
    inten, plan = clean
    raw, _ = spoil_detector(inten[1], rotation=25.0)
    com = _relative_com(raw)
    m = plan.metadata
    kw = dict(scan_step=m.scan_step, detector_sampling=m.detector_sampling, periodic=True)
    a, b = fit_rotation(com, **kw), fit_rotation(-com, **kw)
    assert _angle_error(a.rotation, 25.0) < 0.5
    assert _angle_error(b.rotation, 205.0) < 0.5
    assert a.skewness == pytest.approx(b.skewness)


@pytest.mark.parametrize("rotation,transpose,offset", [(-31.0, False, (-2.2, 1.6)), (63.0, True, (0.7, -0.3)),
                                                       (90.0, True, (1.2, 0.5)), (200.0, False, (0.0, 0.0))])
def test_recorded_orientation_is_what_geometry_orient_undoes(clean, rotation, transpose, offset):
    """Round trip: with the estimated centre, rotation and transpose in the metadata, ReconstructionGeometry brings
    the raw patterns back onto the scan axes — the true patterns, moved by the beam offset turned with them
    (R(θ)·S·offset) — and puts the zero frequency exactly there."""
    inten, plan = clean
    raw, _ = spoil_detector(inten[1], offset=offset, rotation=rotation, transpose=transpose)
    m = plan.metadata
    disk = fit_bright_field_disk(raw.mean(axis=(0, 1)))
    fit = fit_rotation(_relative_com(raw), scan_step=m.scan_step, detector_sampling=m.detector_sampling,
                       periodic=True)
    meta = m.replace(detector_center=disk.centre, detector_rotation=fit.rotation, detector_transpose=fit.transpose)
    geometry = ReconstructionGeometry.from_metadata(meta, scan_shape=raw.shape[:2], detector_shape=raw.shape[2:])
    t = np.radians(rotation)
    turned = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ (
        np.array(offset)[::-1] if transpose else np.array(offset))
    np.testing.assert_allclose(geometry.detector_center, 32 + turned, atol=0.1)
    truth = np.stack([ndimage.shift(p, turned, order=1) for p in inten[1][::3, ::3].reshape(-1, 64, 64)])
    truth = truth.reshape(inten[1][::3, ::3].shape)
    back = geometry.orient(raw[::3, ::3])
    ii, jj = np.indices(back.shape[-2:])
    inside = np.hypot(ii - 32, jj - 32) < 20  # away from the corners the rotations cut off
    err = np.linalg.norm((back - truth)[..., inside]) / np.linalg.norm(truth[..., inside])
    assert err < 0.15, err  # three linear resamplings of a hard-edged disk
    wrong = ReconstructionGeometry.from_metadata(meta.replace(detector_rotation=fit.rotation + 180),
                                                 scan_shape=raw.shape[:2], detector_shape=raw.shape[2:])
    # the patterns are nearly centrosymmetric (Friedel): 180° shows in their centre of mass, which turns over
    com = lambda p: (centre_of_mass_px(p)[0] - centre_of_mass_px(p)[0].mean(axis=(1, 2), keepdims=True)).ravel()  # noqa: E731
    assert np.corrcoef(com(back), com(truth))[0, 1] > 0.95
    assert np.corrcoef(com(wrong.orient(raw[::3, ::3])), com(truth))[0, 1] < -0.95


def test_bad_fields_are_refused_in_one_line():
    for com, words in [(np.zeros((2, 4, 4)), "Rx, Ry ≥ 8"), (np.zeros((3, 10, 10)), r"shape \(2, Rx, Ry\)"),
                       (np.full((2, 10, 10), np.nan), "NaN"), (np.ones((2, 10, 10)), "constant")]:
        with pytest.raises(ValueError, match=words) as info:
            fit_rotation(com, scan_step=(0.2, 0.2))
        assert "\n" not in str(info.value)

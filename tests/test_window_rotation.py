"""A detector turned against the scan, taken by the windows instead of resampling the patterns: the shear rotation
against the pattern rotation it replaces, the pixels' labels and the probe in the detector frame, and FlowTIE and
iCoM on a turned series against the unturned one and against the resampling path."""

import dataclasses
import math

import numpy as np
import pytest

from flowtie_dask.evaluate import evaluate_result
from flowtie_dask.geometry import ReconstructionGeometry, orient_patterns
from flowtie_dask.methods import get_method
from flowtie_dask.projection import rotate_windows
from flowtie_dask.runner import reconstruct
from flowtie_dask.store import write_scan_store, write_truth

from .calibrate.synthetic import clean_series, spoil_detector

Q = 64


def _blob(shift=(0.0, 5.0)):
    i, j = np.meshgrid(np.arange(Q) - Q // 2, np.arange(Q) - Q // 2, indexing="ij")
    return np.exp(-((i - shift[0]) / 9.0) ** 2 / 2 - ((j - shift[1]) / 3.0) ** 2 / 2)


@pytest.mark.parametrize("theta", [20.0, -31.0, 44.0])
def test_turned_windows_are_the_windows_of_turned_patterns(theta):
    far = _blob()
    # orient_patterns turns about the array's centre: an odd-sized array puts it on the zero frequency Q//2
    turned = orient_patterns(np.pad(far, ((0, 1), (0, 1)))[None], rotation=theta)[0][:Q, :Q]
    w = np.fft.ifft2(np.fft.ifftshift(far))
    expect = np.fft.ifft2(np.fft.ifftshift(turned))
    got = rotate_windows(w, theta)
    assert np.abs(got - expect).max() < 2e-4 * np.abs(expect).max()  # the spline of a smooth blob vs exact shears
    assert np.abs(rotate_windows(w, -theta) - expect).max() > 0.1 * np.abs(expect).max()  # the sense matters
    back = rotate_windows(got, -theta)
    assert np.abs(back - w).max() < 1e-6 * np.abs(w).max()


def _geometry(rotation, transpose=False, aberrations=None, rotate_windows=True):
    _, plan = clean_series(scan=16)
    meta = plan.metadata.replace(detector_rotation=rotation, detector_transpose=transpose,
                                 detector_center=(31.3, 32.6), aberrations=aberrations or {})
    return ReconstructionGeometry.from_metadata(meta, scan_shape=(16, 16), detector_shape=(Q, Q),
                                                rotate_windows=rotate_windows)


@pytest.mark.parametrize("rotation,transpose", [(27.0, False), (-110.0, False), (200.0, True)])
def test_each_pixel_is_labelled_with_the_scan_frame_q_where_resampling_would_put_it(rotation, transpose):
    win = _geometry(rotation, transpose)
    pat = _geometry(rotation, transpose, rotate_windows=False)
    assert abs(win.window_rotation) <= 45 and win.rotation % 90 == 0
    assert win.window_rotation + win.rotation == pytest.approx(rotation)
    labels = win.q_labels(np).reshape(Q, Q, 2)
    i, j = np.meshgrid(np.arange(Q), np.arange(Q), indexing="ij")
    for p in [(40, 30), (25, 44), (33, 20)]:
        raw = np.exp(-((i - p[0]) ** 2 + (j - p[1]) ** 2) / 3.0)
        # the raw pixel p as win.orient leaves it (quarter-turns, transpose) …
        quarter = win.orient(raw[None])[0]
        pq = np.unravel_index(np.argmax(quarter), quarter.shape)
        # … and where the full resampling puts its content, as a scattering vector in the scan frame
        full = pat.orient(raw[None])[0]
        ci = (full * i).sum() / full.sum() - pat.detector_center[0]
        cj = (full * j).sum() / full.sum() - pat.detector_center[1]
        q = np.array([ci, cj]) * np.asarray(pat.detector_sampling)
        assert labels[pq] == pytest.approx(q, abs=0.02 * np.asarray(pat.detector_sampling).max())


def test_the_probe_in_the_detector_frame_is_the_scan_frame_probe_turned_back():
    ab = {"C12": 30.0, "phi12": 0.4}
    win, pat = _geometry(27.0, aberrations=ab), _geometry(27.0, aberrations=ab, rotate_windows=False)
    det = win.probe_spectrum(np)
    scan = pat.probe_spectrum(np)
    turned = orient_patterns(np.stack([det.real, det.imag]), rotation=win.window_rotation)
    q = pat.q_labels(np).reshape(Q, Q, 2)
    inside = np.hypot(q[..., 0], q[..., 1]) < 0.8 * pat.semiangle * 1e-3 / pat.wavelength
    err = np.abs(turned[0] + 1j * turned[1] - scan)[inside].max()
    assert err < 0.02 * np.abs(scan).max()
    wrong = _geometry(27.0, aberrations=dict(ab, phi12=0.4 + 2 * math.radians(27.0))).probe_spectrum(np)
    turned = orient_patterns(np.stack([wrong.real, wrong.imag]), rotation=win.window_rotation)
    assert np.abs(turned[0] + 1j * turned[1] - scan)[inside].max() > 5 * err  # the astigmatism's axis is checked


@pytest.fixture(scope="module")
def turned_pair(tmp_path_factory):
    """The same periodic series unturned and on a detector turned by 27° (beam off centre), metadata true."""
    inten, plan = clean_series(scan=48)
    root = tmp_path_factory.mktemp("turned")
    paths = {}
    raw, centre = spoil_detector(inten, offset=(1.3, -0.8), rotation=27.0)
    for name, data, meta in [("straight", inten, plan.metadata),
                             ("turned", raw, plan.metadata.replace(detector_center=centre, detector_rotation=27.0))]:
        path = root / f"{name}.zarr"
        with write_scan_store(path, meta, scan_shape=data.shape[1:3], detector_shape=data.shape[3:5]) as group:
            group["intensity"][...] = data
            write_truth(group, plan.projected_phase, pixel_size=plan.sampling, origin=(0.0, 0.0),
                        attrs={"thickness_A": plan.thickness})
        paths[name] = str(path)
    return paths


@pytest.mark.parametrize("name", ["icom", "flowtie"])
def test_a_turned_detector_reconstructs_like_the_straight_one_without_resampling_patterns(turned_pair, name):
    paths = turned_pair
    straight = evaluate_result(reconstruct(paths["straight"], get_method(name), progress=False),
                               paths["straight"])["mse"]
    win_res = reconstruct(paths["turned"], get_method(name), progress=False)
    assert win_res.attrs["window_rotation_deg"] == pytest.approx(27.0)
    windows = evaluate_result(win_res, paths["turned"])["mse"]
    resampling = get_method(name)
    resampling.rotates_windows = False  # the path every method had before: the patterns turned by splines
    res_p = reconstruct(paths["turned"], resampling, progress=False)
    assert res_p.attrs["window_rotation_deg"] == 0.0
    patterns = evaluate_result(res_p, paths["turned"])["mse"]
    # measured: iCoM 0.003830 straight, 0.003830 turned windows, 0.003823 resampled; FlowTIE 0.001618, 0.001621,
    # 0.001730 (the resampled patterns' blur of the bright-field edge costs FlowTIE 7 %)
    assert windows < 1.02 * straight, (windows, straight)
    assert windows < (0.97 if name == "flowtie" else 1.01) * patterns, (windows, patterns)


def test_only_methods_that_label_pixels_with_q_take_the_turn_by_windows(tmp_path):
    from flowtie_dask.model.architectures import FlowPredictorModel
    from flowtie_dask.model.checkpoint import save_checkpoint

    assert get_method("flowtie").rotates_windows and get_method("icom").rotates_windows
    # TIE's mirror boundary mirrors the detector along the scan axes; GD models the patterns on the scan's axes
    assert not get_method("tie").rotates_windows and not get_method("gd").rotates_windows
    path = save_checkpoint(str(tmp_path / "paper.pt"), model=FlowPredictorModel(16, hidden=4), meta={})
    assert not get_method("flowtie", model=path).rotates_windows  # its channels are the detector's pixels

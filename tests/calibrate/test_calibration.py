"""calibrate_store / record_calibration on scan stores of spoiled simulated series (known truth)."""

import json
import os

import numpy as np
import pytest

from flowtie_dask.calibrate import calibrate_store, describe_calibration, record_calibration
from flowtie_dask.calibrate import reading
from flowtie_dask.geometry import ReconstructionGeometry
from flowtie_dask.store import open_scan_store, write_scan_store

from .synthetic import spoiled_store

DRIFT = ((0.37, -1.21), (0.0, 0.0), (-2.46, 0.83))


def _angle_error(a, b):
    return abs((a - b + 180.0) % 360.0 - 180.0)


@pytest.fixture(scope="module")
def spoiled(tmp_path_factory):
    """A non-periodic 40×40 window, drifted scans, beam off centre, detector rotated and transposed, 1e5 e⁻."""
    path = str(tmp_path_factory.mktemp("cal") / "spoiled.zarr")
    truth = spoiled_store(path, drift_steps=DRIFT, offset=(-1.3, 0.6), rotation=-50.0, transpose=True,
                          electrons=1e5, crop=(4, 4, 40))
    return path, truth


def _check(cal, truth):
    step = np.asarray(truth["scan_step"])
    assert np.all(np.abs(np.subtract(cal.disk.centre, truth["centre"])) < 0.1), (cal.disk, truth["centre"])
    assert cal.rotation.transpose == truth["transpose"]
    assert _angle_error(cal.rotation.rotation, truth["rotation"]) < 1.0, cal.rotation
    assert np.all(np.abs(np.asarray(cal.drift.angstrom) - truth["drift_A"]) < 0.1 * step), cal.drift.angstrom
    assert not cal.problems, cal.problems


def test_estimates_record_and_round_trip(spoiled, tmp_path):
    path, truth = spoiled
    copy = str(tmp_path / "s.zarr")
    import shutil

    shutil.copytree(path, copy)
    cal = calibrate_store(copy)
    _check(cal, truth)
    assert cal.focus_index == 1 and cal.images["bright field"].shape == (3, 40, 40)
    before = open_scan_store(copy).metadata
    meta = record_calibration(cal)
    after = open_scan_store(copy).metadata
    assert after == meta
    assert after.detector_center == cal.disk.centre
    assert after.detector_rotation == cal.rotation.rotation and after.detector_transpose is True
    np.testing.assert_allclose(after.scan_drift, cal.drift.angstrom)
    assert after.scan_drift[1] == (0.0, 0.0)
    for q in ("detector_center", "detector_rotation", "detector_transpose", "scan_drift", "descan",
              "bright_field_radius"):
        e = after.calibration[q]
        assert e["source"] == "estimated from data" and e["method"] and "value" in e and "uncertainty" in e, q
    assert after.calibration["detector_center"]["previous"] == list(before.detector_center)
    assert after.calibration["scan_drift"]["previous"] == [[0.0, 0.0]] * 3
    assert after.calibration["descan"]["applied"] is False
    # everything else in the store is as it was
    assert after.replace(detector_center=before.detector_center, detector_rotation=0.0, detector_transpose=False,
                         scan_drift=before.scan_drift, calibration={}) == before
    # the geometry a reconstruction builds from the recorded values undoes the spoiling: the zero frequency sits
    # where the beam offset, turned with the patterns, puts it
    g = ReconstructionGeometry.from_metadata(after, scan_shape=(40, 40), detector_shape=(64, 64))
    t = np.radians(truth["rotation"])
    turned = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ np.array((-1.3, 0.6))[::-1]
    np.testing.assert_allclose(g.detector_center, 32 + turned, atol=0.1)
    # calibrating again keeps the first calibration as history and the first estimate as previous
    again = record_calibration(calibrate_store(copy))
    e = again.calibration["detector_center"]
    assert len(e["history"]) == 1 and e["history"][0]["previous"] == list(before.detector_center)
    assert e["previous"] == list(after.detector_center)
    lines = describe_calibration(again.calibration)
    assert any(line.startswith("detector_center (") and "estimated from data" in line and "1 earlier" in line
               for line in lines), lines


def test_the_store_is_read_by_blocks_of_rows_one_scan_at_a_time(spoiled, monkeypatch):
    """Never the whole 4D scan at once: every read is one scan and whole chunk rows within the block budget; a
    budget of one chunk row gives the same estimates."""
    path, truth = spoiled
    calls = []
    real = reading.read_block

    def spy(store, rows, cols, *, defocus=None, **kw):
        calls.append((rows, cols, tuple(defocus)))
        return real(store, rows, cols, defocus=defocus, **kw)

    monkeypatch.setattr(reading, "read_block", spy)
    one_row = 16 * 40 * 64 * 64 * 4  # the store's chunk rows are 16 positions high
    small = calibrate_store(path, block_bytes=one_row, threads=2)
    assert all(len(d) == 1 and (r.stop - r.start) <= 16 and c == slice(None) for r, c, d in calls), calls
    assert len(calls) == 3 * 4  # the focus scan twice (mean pattern and CoM, then virtual images), the others once
    calls.clear()
    big = calibrate_store(path)
    assert len(calls) == 4 and all(len(d) == 1 for _, _, d in calls)
    _check(small, truth)
    assert small.disk.centre == pytest.approx(big.disk.centre, abs=1e-9)
    assert small.rotation.rotation == pytest.approx(big.rotation.rotation, abs=1e-9)
    np.testing.assert_allclose(small.drift.steps, big.drift.steps, atol=1e-9)


def test_counts_in_a_uint16_store(spoiled, tmp_path):
    """Camera counts (uint16, no normalisation) give the same estimates."""
    path, truth = spoiled
    src = open_scan_store(path)
    counts = np.rint(np.asarray(src.intensity[...]) * 1e5).astype(np.uint16)
    out = str(tmp_path / "counts.zarr")
    with write_scan_store(out, src.metadata, scan_shape=(40, 40), detector_shape=(64, 64), dtype="uint16") as g:
        g["intensity"][...] = counts
    cal = calibrate_store(out)
    _check(cal, truth)


def test_steps_left_out_are_not_estimated_or_written(spoiled, tmp_path):
    import shutil

    path, truth = spoiled
    copy = str(tmp_path / "c.zarr")
    shutil.copytree(path, copy)
    cal = calibrate_store(copy, steps=["centre"])
    assert cal.rotation is None and cal.drift is None and cal.images is None
    meta = record_calibration(cal)
    assert meta.detector_rotation == 0.0 and meta.scan_drift == ((0.0, 0.0),) * 3
    assert set(meta.calibration) == {"detector_center", "bright_field_radius", "descan"}
    cal = calibrate_store(copy, steps=("drift",))  # the virtual detectors still use a fitted disk
    assert cal.rotation is None and "detector_center" not in cal.fields()
    assert np.all(np.abs(np.asarray(cal.drift.steps) - DRIFT) < 0.1)
    with pytest.raises(ValueError, match="some of centre, rotation, drift"):
        calibrate_store(copy, steps=["centre", "tilt"])


def _series_store(path, intensity, metadata):
    with write_scan_store(path, metadata, scan_shape=intensity.shape[1:3], detector_shape=intensity.shape[3:],
                          ) as g:
        g["intensity"][...] = intensity
    return path


def test_what_the_data_do_not_support_is_refused_and_nothing_written(spoiled, tmp_path):
    path, truth = spoiled
    src = open_scan_store(path)
    inten = np.asarray(src.intensity[...])
    rng = np.random.default_rng(0)
    # the minus scan's positions shuffled: its images share nothing with the focus scan's
    shuffled = inten.copy()
    flat = shuffled[0].reshape(-1, 64, 64)
    shuffled[0] = flat[rng.permutation(len(flat))].reshape(shuffled[0].shape)
    store = _series_store(str(tmp_path / "shuffled.zarr"), shuffled, src.metadata)
    cal = calibrate_store(store)
    assert cal.problems and cal.problems[0].startswith("drift: the virtual images disagree")
    doc = open(os.path.join(store, "zarr.json"), "rb").read()
    with pytest.raises(ValueError, match="nothing was written") as info:
        record_calibration(cal)
    assert "\n" not in str(info.value)
    assert open(os.path.join(store, "zarr.json"), "rb").read() == doc
    meta = record_calibration(cal, force=True)
    assert meta.calibration["scan_drift"]["forced_past"] == cal.problems
    # vacuum: the same beam everywhere, shot noise only — no specimen signal for the rotation
    vac = np.broadcast_to(inten[1].mean(axis=(0, 1)), inten.shape)
    vac = (rng.poisson(vac * 1e5) / 1e5).astype(np.float32)
    cal = calibrate_store(_series_store(str(tmp_path / "vacuum.zarr"), vac, src.metadata), steps=["rotation"])
    assert cal.problems and cal.problems[0].startswith("rotation:"), cal.problems
    blank = _series_store(str(tmp_path / "blank.zarr"), np.zeros_like(inten), src.metadata)
    with pytest.raises(ValueError, match="sum to zero|constant") as info:
        calibrate_store(blank)
    assert "\n" not in str(info.value)


def test_a_disk_that_disagrees_with_the_semi_angle_is_a_warning(spoiled, tmp_path):
    path, _ = spoiled
    src = open_scan_store(path)
    store = _series_store(str(tmp_path / "w.zarr"), np.asarray(src.intensity[...]),
                          src.metadata.replace(semiangle=30.0))
    cal = calibrate_store(store, steps=["centre"])
    assert any("not the given semi-angle 30 mrad" in w for w in cal.warnings), cal.warnings
    assert json.loads(json.dumps(cal.entries()))  # the record is JSON

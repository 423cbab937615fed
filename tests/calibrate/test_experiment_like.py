"""calibrate on the experiment-like Si series (simulated by another code, then spoiled as a microscope spoils a
series), compared with the truth of the spoiling (spoil.json: for checking only, never an input).

The frames are imported here with h5py (+ hdf5plugin for their bitshuffle-LZ4) into a uint16 store through
write_scan_store, with the metadata a user knows (microscope.json): nominal defocus and step, detector angle per
pixel, and the beam assumed at the detector's centre N//2, unrotated, no drift.
"""

import json
import math
import os

import numpy as np
import pytest

from flowtie_dask.calibrate import calibrate_store, fit_bright_field_disk, record_calibration
from flowtie_dask.physics.constants import wavelength
from flowtie_dask.store import ScanMetadata, open_scan_store, write_scan_store

DATA = os.environ.get("FLOWTIE_EXPERIMENT_LIKE", os.path.join(os.path.dirname(__file__), "..", "..", "..",
                                                                  "shared", "data", "experiment_like", "si_300kV"))
pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(DATA, "spoil.json")),
                                reason=f"the experiment-like series is not at {DATA}")


def _frames(name):
    import h5py
    import hdf5plugin  # noqa: F401 - registers bitshuffle-LZ4 with h5py

    with h5py.File(os.path.join(DATA, name), "r") as f:
        return np.asarray(f["entry/data/data"])


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    mic = json.load(open(os.path.join(DATA, "microscope.json")))
    energy = mic["high_tension_kV"] * 1e3
    rx, ry = mic["scan_shape"]
    step = mic["scan_step_nm_nominal"] * 10
    meta = ScanMetadata(energy=energy, semiangle=mic["convergence_semiangle_mrad"],
                        defocus=tuple(10 * d for d in mic["defocus_nm_nominal"]), scan_step=(step, step),
                        detector_sampling=(mic["detector_mrad_per_pixel"] * 1e-3 / wavelength(energy),) * 2,
                        detector_center=(32, 32), periodic=False, provenance={"source": DATA})
    assert mic["defocus_sign"] == "positive = underfocus"  # the package's Δf convention
    path = str(tmp_path_factory.mktemp("si") / "si.zarr")
    with write_scan_store(path, meta, scan_shape=(rx, ry), detector_shape=(64, 64), dtype="uint16") as g:
        for s, name in enumerate(mic["files"][k] for k in ("minus", "focus", "plus")):
            g["intensity"][s] = _frames(name).reshape(rx, ry, 64, 64)
    return path


def _truth():
    """spoil.json in the store's terms: detector_rotation = −θ (orient undoes R(θ)), the drifts with the focus scan's
    (0, 0) between them, and the beam centre — where the clean twin's own beam (2×2 binning of a 128-pixel grid puts
    zero frequency at 31.75, not N//2 = 32) was moved to by R(θ) about N//2, plus the offset."""
    spoil = json.load(open(os.path.join(DATA, "spoil.json")))
    import h5py

    with h5py.File(os.path.join(DATA, "clean_series.h5"), "r") as f:
        clean = fit_bright_field_disk(np.asarray(f["focus"], dtype=np.float64).mean(axis=0)).centre
    t = math.radians(spoil["rotation_deg"])
    r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    centre = 32 + r @ (np.asarray(clean) - 32) + np.asarray(spoil["beam_offset_px"])
    minus, plus = spoil["drift_A_minus_plus"]
    return {"rotation": -spoil["rotation_deg"] % 360, "centre": centre, "nominal_centre": 32 + np.asarray(
        spoil["beam_offset_px"]), "clean_centre": clean, "drift": np.array([minus, [0.0, 0.0], plus])}


def test_estimates_against_the_truth_of_the_spoiling(imported, capsys):
    cal = calibrate_store(imported)
    truth = _truth()
    step = open_scan_store(imported).metadata.scan_step[0]
    d_err = np.asarray(cal.drift.angstrom) - truth["drift"]
    c_err = np.subtract(cal.disk.centre, truth["centre"])
    r_err = (cal.rotation.rotation - truth["rotation"] + 180) % 360 - 180
    with capsys.disabled():
        print(f"\nexperiment-like si_300kV: centre {np.round(cal.disk.centre, 3)} ± {np.round(cal.disk.uncertainty, 3)}"
              f" px, truth {np.round(truth['centre'], 3)} (N//2 + offset {truth['nominal_centre']}, clean twin's beam "
              f"{np.round(truth['clean_centre'], 3)}); rotation {cal.rotation.rotation:.3f} ± "
              f"{cal.rotation.uncertainty:.3f}°, truth {truth['rotation']:g}°, transpose {cal.rotation.transpose}; "
              f"drift {np.round(cal.drift.angstrom, 4).tolist()} ± {np.round(cal.drift.uncertainty, 4).tolist()} Å,"
              f" truth {truth['drift'].tolist()}, error {np.round(d_err / step, 3).tolist()} steps")
    assert not cal.problems, cal.problems
    assert np.all(np.abs(c_err) < 0.2), c_err
    assert cal.rotation.transpose is False and abs(r_err) < 1.0, r_err
    assert np.all(np.abs(d_err) < 0.1 * step), d_err / step
    meta = record_calibration(cal)
    assert meta.scan_drift[1] == (0.0, 0.0)
    np.testing.assert_allclose(meta.scan_drift, cal.drift.angstrom)

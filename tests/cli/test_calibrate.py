"""flowtie-dask calibrate STORE: estimates printed and recorded, the figure, --only/--dry-run/--force, and every
refusal one line with exit 2 and the store unchanged; info lists what was recorded."""

import os
import shutil

import numpy as np
import pytest

from flowtie_dask.cli.main import main
from flowtie_dask.store import open_scan_store, write_scan_store

from ..calibrate.synthetic import spoiled_store
from .catalogue import assert_refused, tree_checksum

DRIFT = ((0.37, -1.21), (0.0, 0.0), (-2.46, 0.83))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cli") / "spoiled.zarr")
    truth = spoiled_store(path, drift_steps=DRIFT, offset=(0.9, -0.4), rotation=-31.0, electrons=1e5,
                          crop=(4, 4, 40))
    return path, truth


@pytest.fixture
def store(source, tmp_path):
    path = str(tmp_path / "s.zarr")
    shutil.copytree(source[0], path)
    return path


def test_calibrate_prints_records_and_draws(store, source, tmp_path, capsys):
    figure = str(tmp_path / "cal.png")
    assert main(["calibrate", store, "--figure", figure]) == 0
    out = capsys.readouterr().out
    for head in ("calibrate ", "beam centre ", "descan ", "rotation ", "drift ", "figure ", "written "):
        assert any(line.startswith(head) for line in out.splitlines()), (head, out)
    assert "329.0" in out or "328.9" in out or "329.1" in out  # -31° is 329° (what orient needs)
    with open(figure, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    meta = open_scan_store(store).metadata
    truth = source[1]
    assert np.all(np.abs(np.subtract(meta.detector_center, truth["centre"])) < 0.1)
    assert abs((meta.detector_rotation - 329.0 + 180) % 360 - 180) < 1.0 and meta.detector_transpose is False
    assert np.all(np.abs(np.asarray(meta.scan_drift) - truth["drift_A"]) < 0.1 * truth["scan_step"][0])
    assert main(["info", store]) == 0
    info = capsys.readouterr().out
    lines = [line for line in info.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("calibration    "))
    listed = " ".join(lines[start:start + 6])
    for q in ("detector_center", "bright_field_radius", "descan", "detector_rotation", "detector_transpose",
              "scan_drift"):
        assert q in listed, (q, listed)
    assert "estimated from data" in lines[start] and "was (32, 32)" in lines[start]
    assert any(line.startswith("scan drift     (") for line in lines)
    # the figure is not replaced without --overwrite; with it, it is
    assert_refused(["calibrate", store, "--figure", figure, "--dry-run"], match="already exists.*--overwrite",
                   inputs=[store, figure], capsys=capsys)
    assert main(["calibrate", store, "--figure", figure, "--overwrite", "--dry-run"]) == 0


def test_info_of_an_uncalibrated_store_says_how(store, capsys):
    assert main(["info", store]) == 0
    assert "calibration    none recorded (flowtie-dask calibrate STORE" in capsys.readouterr().out


def test_only_and_dry_run(store, capsys):
    before = tree_checksum(store)
    assert main(["calibrate", store, "--dry-run"]) == 0
    assert "written        nothing (--dry-run)" in capsys.readouterr().out
    assert tree_checksum(store) == before
    assert main(["calibrate", store, "--only", "centre", "rotation"]) == 0
    out = capsys.readouterr().out
    assert "drift " not in out and "detector_rotation" in out.splitlines()[-1]
    meta = open_scan_store(store).metadata
    assert meta.scan_drift == ((0.0, 0.0),) * 3 and "scan_drift" not in meta.calibration
    assert meta.detector_rotation != 0.0


def test_refusals_are_one_line_and_leave_the_store_alone(store, source, tmp_path, capsys):
    assert_refused(["calibrate", str(tmp_path / "missing.zarr")], match="does not exist", capsys=capsys)
    assert_refused(["calibrate", store, "--only", "tilt"], match="invalid choice", inputs=[store], capsys=capsys)
    assert_refused(["calibrate", store, "--upsample", "0"], match="must be ≥ 1", inputs=[store], capsys=capsys)
    assert_refused(["calibrate", store, "--figure", os.path.join(store, "f.png")], match="lies inside the input",
                   inputs=[store], capsys=capsys)
    assert_refused(["calibrate", store, "--figure", str(tmp_path / "no" / "f.png")], match="does not exist",
                   inputs=[store], capsys=capsys)
    assert_refused(["calibrate", store, "--figure", str(tmp_path / "f.zarr")], match="cannot write .zarr files",
                   inputs=[store], capsys=capsys)
    src = open_scan_store(store)
    inten = np.asarray(src.intensity[...])
    blank = str(tmp_path / "blank.zarr")
    with write_scan_store(blank, src.metadata, scan_shape=(40, 40), detector_shape=(64, 64)) as g:
        g["intensity"][...] = 0
    assert_refused(["calibrate", blank], match="sum to zero", inputs=[blank], capsys=capsys)
    # a minus scan unrelated to the focus scan (positions shuffled): the drift check fails, nothing is written
    shuffled = str(tmp_path / "shuffled.zarr")
    bad = inten.copy()
    flat = bad[0].reshape(-1, 64, 64)
    bad[0] = flat[np.random.default_rng(0).permutation(len(flat))].reshape(bad[0].shape)
    with write_scan_store(shuffled, src.metadata, scan_shape=(40, 40), detector_shape=(64, 64)) as g:
        g["intensity"][...] = bad
    figure = str(tmp_path / "why.png")
    line = assert_refused(["calibrate", shuffled, "--figure", figure], match="drift: the virtual images disagree.*"
                          "nothing was written", inputs=[shuffled], capsys=capsys)
    assert "--force" in line
    assert os.path.exists(figure)  # the figure shows why
    assert main(["calibrate", shuffled, "--force"]) == 0
    err = capsys.readouterr().err
    assert "recorded anyway: --force" in err
    assert open_scan_store(shuffled).metadata.calibration["scan_drift"]["forced_past"]

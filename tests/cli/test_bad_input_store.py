"""Bad scan stores and implausible optics on the command line: exit 2, one line naming the problem, inputs unchanged,
no output written (through the harness in tests/cli/catalogue.py)."""

import os

import numpy as np
import pytest
import zarr

from flowtie_dask.store import ScanMetadata, write_scan_store
from tests.cli.catalogue import assert_refused

META = ScanMetadata(energy=300e3, semiangle=20.0, defocus=(-20, 0, 20), scan_step=0.2, detector_sampling=0.08,
                    detector_center=(4, 4), periodic=True)
SMALL = ["--lateral-cells", "1", "--scan-pixels", "6", "--detector-pixels", "16", "--gpts", "24", "--no-progress",
         "--workers", "0"]


@pytest.fixture
def store(tmp_path):
    path = str(tmp_path / "scan.zarr")
    with write_scan_store(path, META, scan_shape=(8, 8), detector_shape=(8, 8), chunks=(4, 4)) as g:
        g["intensity"][:] = np.random.default_rng(0).random(g["intensity"].shape, dtype=np.float32) + 0.1
    return path


def _chunk(store, coords):
    arr = zarr.open_array(os.path.join(store, "intensity"), mode="r")
    key = arr.metadata.encode_chunk_key(coords)
    return os.path.join(store, "intensity", *key.split("/")), f"intensity/{key}"


def test_info_on_a_store_with_a_missing_chunk(store, capsys):
    path, key = _chunk(store, (1, 0, 1, 0, 0))
    os.remove(path)
    line = assert_refused(["info", store], match=rf"chunk {key} \(defocus index 1, Rx 0–3, Ry 4–7\) is missing",
                          inputs=[store], capsys=capsys)
    assert "1 of 12 intensity chunks missing" in line and "info --check" in line


def test_info_check_on_a_corrupt_store(store, capsys):
    path, key = _chunk(store, (2, 1, 0, 0, 0))
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    line = assert_refused(["info", "--check", store], match=r"1 of 12 chunks bad .*\(1 corrupt\)",
                          inputs=[store], capsys=capsys)
    assert f"{key} (defocus index 2, Rx 4–7, Ry 0–3): corrupt (CRC-32C checksum mismatch)" in line


def test_reconstruct_on_a_store_with_a_missing_chunk(store, tmp_path, capsys):
    path, key = _chunk(store, (0, 1, 1, 0, 0))
    os.remove(path)
    out = tmp_path / "result.zarr"
    assert_refused(["reconstruct", store, "--out", str(out), "--no-progress", "--workers", "0"],
                   match=rf"incomplete: chunk {key} \(defocus index 0, Rx 4–7, Ry 4–7\) is missing",
                   inputs=[store], outputs=[out], capsys=capsys)


def test_info_on_a_plain_folder(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.txt").write_text("not a store")
    assert_refused(["info", str(folder)], match=r"exists but is not a Zarr group \(no zarr\.json\)",
                   inputs=[folder], capsys=capsys)


def test_info_on_a_file(tmp_path, capsys):
    f = tmp_path / "scan.h5"
    f.write_bytes(b"\x89HDF\r\n")
    assert_refused(["info", str(f)], match=r"is a file, not a scan store", inputs=[f], capsys=capsys)


def test_info_on_a_store_whose_intensity_is_a_group(tmp_path, capsys):
    path = str(tmp_path / "hand.zarr")
    g = zarr.open_group(path, mode="w", zarr_format=3)
    g.attrs.update({**META.to_attrs(), "complete": True})
    scans = g.create_group("intensity")  # one array per defocus, as a user might lay it out
    for i in range(3):
        scans.create_array(str(i), shape=(8, 8, 8, 8), dtype="float32")
    assert_refused(["info", path], match=r"'intensity' is a Zarr group, not an array", inputs=[path], capsys=capsys)


@pytest.mark.parametrize("args,match", [
    (["--energy", "1e30"], r"energy 1e\+30 eV is outside the plausible range 10 keV–3 MeV \(10000–3000000 eV\)"),
    (["--semiangle", "3000"], r"semiangle 3000 mrad is outside the plausible range 0\.1–200 mrad"),
    (["--defocus-step", "1e-9"], r"defocus step 1e-09 Å .*below the plausible minimum 0\.1 Å"),
])
def test_simulate_with_implausible_optics(tmp_path, capsys, args, match):
    out = tmp_path / "g.zarr"
    assert_refused(["simulate", "GaAs", "--out", str(out), *args, *SMALL], match=match, outputs=[out], capsys=capsys)

"""Nothing lost, nothing silently wrong: per-chunk checksums, every chunk on disk, missing and corrupt chunks named."""

import json
import os
import pickle

import numpy as np
import pytest
import zarr

from flowtie_dask.cli.main import main
from flowtie_dask.store import (
    ScanMetadata,
    ScanStoreError,
    check_scan_store,
    open_scan_store,
    read_block,
    write_scan_store,
    write_truth,
)

META = ScanMetadata(energy=300e3, semiangle=20.0, defocus=(-20, 0, 20), scan_step=0.2, detector_sampling=0.08,
                    detector_center=(4, 4))
SHAPE = (3, 8, 8, 8, 8)


def _data(seed=0):
    return np.random.default_rng(seed).random(SHAPE, dtype=np.float32)


def _write(path, data=None, truth=False):
    data = _data() if data is None else data
    with write_scan_store(path, META, scan_shape=SHAPE[1:3], detector_shape=SHAPE[3:], chunks=(4, 4)) as g:
        g["intensity"][:] = data
        if truth:
            write_truth(g, np.ones((16, 16)), pixel_size=(0.1, 0.1), probe_frame_chunks=(4, 4))
            g["truth/probe_frame_phase"][:] = 0.5
    return str(path)


def _chunk_file(store, coords, name="intensity"):
    arr = zarr.open_array(os.path.join(store, name), mode="r")
    key = arr.metadata.encode_chunk_key(coords)
    return os.path.join(store, name, *key.split("/")), f"{name}/{key}"


def _where(d, i, j):
    return f"defocus index {d}, Rx {4 * i}–{4 * i + 3}, Ry {4 * j}–{4 * j + 3}"


def _flip_middle(path, n=8):
    b = bytearray(open(path, "rb").read())
    mid = len(b) // 2
    for k in range(mid - n // 2, mid + n // 2):
        b[k] ^= 0xFF
    open(path, "wb").write(bytes(b))


def test_new_stores_have_crc32c_and_schema_2(tmp_path):
    store = _write(tmp_path / "a.zarr", truth=True)
    for name in ("intensity", "truth/probe_frame_phase", "truth/projected_phase"):
        codecs = json.load(open(os.path.join(store, name, "zarr.json")))["codecs"]
        assert [c["name"] for c in codecs][-1] == "crc32c", name
    assert json.load(open(os.path.join(store, "zarr.json")))["attributes"]["schema_version"] == 2
    assert "CRC-32C per chunk" in open_scan_store(store).describe()


def test_every_chunk_is_on_disk_even_when_all_zero(tmp_path):
    data = _data()
    data[1, 4:8, 0:4] = 0  # one whole chunk of zeros
    data[2] = 0  # a whole defocus of zeros
    store = _write(tmp_path / "a.zarr", data=data)
    for d in range(3):
        for i in range(2):
            for j in range(2):
                assert os.path.isfile(_chunk_file(store, (d, i, j, 0, 0))[0]), (d, i, j)
    np.testing.assert_array_equal(open_scan_store(store).intensity[:], data)


@pytest.mark.parametrize("coords", [(1, 1, 0), (0, 0, 1), (2, 1, 1)])
def test_missing_chunk_is_named_at_open(tmp_path, coords):
    store = _write(tmp_path / "a.zarr")
    path, key = _chunk_file(store, coords + (0, 0))
    os.remove(path)
    with pytest.raises(ScanStoreError) as err:
        open_scan_store(store)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"chunk {key} ({_where(*coords)}) is missing" in msg
    assert "1 of 12 intensity chunks missing" in msg
    assert "info --check" in msg and "copy it again" in msg


def test_missing_chunks_counted_and_first_named(tmp_path):
    store = _write(tmp_path / "a.zarr")
    for c in [(2, 0, 1), (0, 1, 0), (1, 1, 1)]:
        os.remove(_chunk_file(store, c + (0, 0))[0])
    with pytest.raises(ScanStoreError, match=r"3 of 12 intensity chunks missing") as err:
        open_scan_store(store)
    assert _chunk_file(store, (0, 1, 0, 0, 0))[1] in str(err.value)  # the first in store order
    assert open_scan_store(store, check_chunks=False).scan_shape == (8, 8)


def test_chunk_key_encoding_is_read_from_the_metadata(tmp_path):
    """A hand-made store with v2-style keys ('.' separator, no 'c/' prefix) is checked with those keys."""
    path = str(tmp_path / "h.zarr")
    g = zarr.open_group(path, mode="w", zarr_format=3)
    g.attrs.update({**META.to_attrs(), "complete": True})
    a = g.create_array("intensity", shape=SHAPE, chunks=(1, 4, 4, 8, 8), dtype="float32",
                       chunk_key_encoding={"name": "v2", "separator": "."})
    a[:] = _data()
    assert os.path.isfile(os.path.join(path, "intensity", "2.1.0.0.0"))
    open_scan_store(path)  # complete: opens
    os.remove(os.path.join(path, "intensity", "2.1.0.0.0"))
    with pytest.raises(ScanStoreError, match=r"chunk intensity/2\.1\.0\.0\.0 \(defocus index 2, Rx 4–7, Ry 0–3\)"):
        open_scan_store(path)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_chunk_is_named_by_read_block(tmp_path, damage):
    data = _data()
    store = _write(tmp_path / "a.zarr", data=data)
    path, key = _chunk_file(store, (1, 0, 1, 0, 0))
    if damage == "flip":
        _flip_middle(path)
    else:
        b = open(path, "rb").read()
        open(path, "wb").write(b[: len(b) // 2])
    open_scan_store(store)  # present on disk: opening does not read data
    with pytest.raises(ScanStoreError) as err:
        read_block(store, list(range(0, 6)), list(range(2, 8)))
    msg = str(err.value)
    assert "\n" not in msg and err.value.__cause__ is None and err.value.__suppress_context__
    assert f"chunk {key} ({_where(1, 0, 1)}) is corrupt" in msg
    assert "info --check" in msg
    # blocks not touching the bad chunk still read
    np.testing.assert_array_equal(read_block(store, [4, 5, 6], [0, 1, 2]), data[:, 4:7, 0:3])


def test_read_block_names_a_missing_chunk_instead_of_reading_zeros(tmp_path):
    store = _write(tmp_path / "a.zarr")
    path, key = _chunk_file(store, (0, 1, 1, 0, 0))
    os.remove(path)
    with pytest.raises(ScanStoreError, match=rf"chunk {key} \({_where(0, 1, 1)}\) is missing"):
        read_block(store, [7, 0], [7, 0])  # wrapped indices touch all four corners


@pytest.mark.parametrize("rows,cols", [
    (list(range(2, 7)), list(range(0, 8))),  # contiguous
    ([6, 7, 0, 1], [3, 4, 5]),  # wrapped rows
    ([5], [7, 0, 1, 2]),  # wrapped cols
    ([1, 3, 6], [6, 2]),  # arbitrary
])
def test_read_block_equals_orthogonal_indexing(tmp_path, rows, cols):
    data = _data(seed=3)
    store = _write(tmp_path / "a.zarr", data=data)
    want = data[:, rows][:, :, cols]
    st = open_scan_store(store)
    assert np.array_equal(read_block(store, rows, cols), want)
    assert np.array_equal(read_block(st, rows, cols), want)
    assert np.array_equal(read_block(st.intensity, rows, cols), want)
    got = read_block(os.path.join(store, "intensity"), rows, cols, dtype=np.float64)
    assert got.dtype == np.float64 and np.array_equal(got, want)
    again = pickle.loads(pickle.dumps(read_block))
    assert np.array_equal(again(store, rows, cols), want)


def test_check_lists_exactly_the_bad_chunks(tmp_path):
    data = _data()
    data[2, 5, 6, 1, 2] = np.nan
    data[2, 7, 7, 0, 0] = np.inf
    store = _write(tmp_path / "a.zarr", data=data, truth=True)
    good = check_scan_store(store)
    assert not good.ok  # the NaN/Inf chunk
    assert [(b.key, b.kind) for b in good.bad] == [(_chunk_file(store, (2, 1, 1, 0, 0))[1], "non-finite")]
    assert "2 non-finite values (1 NaN, 1 ±Inf), first at (2, 5, 6, 1, 2), (2, 7, 7, 0, 0)" in good.bad[0].problem
    missing, missing_key = _chunk_file(store, (0, 1, 0, 0, 0))
    corrupt, corrupt_key = _chunk_file(store, (1, 0, 1, 0, 0))
    truth_bad, truth_key = _chunk_file(store, (1, 1, 0, 0), name="truth/probe_frame_phase")
    os.remove(missing)
    _flip_middle(corrupt)
    _flip_middle(truth_bad)
    seen = []
    report = check_scan_store(store, on_bad=seen.append)
    assert report.chunks == 12 + 1 + 4
    assert {(b.key, b.kind) for b in report.bad} == {
        (missing_key, "missing"), (corrupt_key, "corrupt"), (truth_key, "corrupt"),
        (_chunk_file(store, (2, 1, 1, 0, 0))[1], "non-finite")}
    assert seen == report.bad
    assert report.summary().startswith("4 of 17 chunks bad")


def test_check_of_a_good_store(tmp_path, capsys):
    store = _write(tmp_path / "a.zarr", truth=True)
    report = check_scan_store(store)
    assert report.ok and report.chunks == 17 and report.summary() == "all 17 chunks present and intact"
    capsys.readouterr()
    assert main(["info", "--check", store]) == 0
    out = capsys.readouterr().out
    assert "all 17 chunks present and intact" in out and "(3, 8, 8, 8, 8)" in out


def test_info_check_prints_every_bad_chunk(tmp_path, capsys):
    store = _write(tmp_path / "a.zarr")
    removed = [_chunk_file(store, c)[1] for c in [(0, 0, 0, 0, 0), (2, 1, 1, 0, 0)]]
    for c in [(0, 0, 0, 0, 0), (2, 1, 1, 0, 0)]:
        os.remove(_chunk_file(store, c)[0])
    corrupt, corrupt_key = _chunk_file(store, (1, 1, 0, 0, 0))
    _flip_middle(corrupt)
    capsys.readouterr()
    assert main(["info", "--check", store]) == 2
    cap = capsys.readouterr()
    bad_lines = [line for line in cap.out.splitlines() if line.startswith("bad chunk")]
    assert len(bad_lines) == 3
    for key in removed:
        assert any(key in line and line.endswith("missing") for line in bad_lines), key
    assert any(corrupt_key in line and "checksum" in line for line in bad_lines)
    err = cap.err.strip().splitlines()
    assert len(err) == 1 and "3 of 12 chunks bad" in err[0] and "2 missing, 1 corrupt" in err[0]


def test_legacy_store_without_checksums_still_opens_and_reads(tmp_path):
    from zarr.codecs import BloscCodec, BloscShuffle

    path = str(tmp_path / "old.zarr")
    data = _data(seed=7)
    g = zarr.open_group(path, mode="w", zarr_format=3)
    g.attrs.update({**META.to_attrs(), "schema_version": 1, "complete": True})
    a = g.create_array("intensity", shape=SHAPE, chunks=(1, 4, 4, 8, 8), dtype="float32", fill_value=0,
                       compressors=[BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.bitshuffle)],
                       dimension_names=("defocus", "Rx", "Ry", "Qx", "Qy"))
    a[:] = data
    st = open_scan_store(path)
    assert "crc32c" not in json.dumps(json.load(open(os.path.join(path, "intensity", "zarr.json"))))
    np.testing.assert_array_equal(read_block(st, [6, 7, 0], [1, 2]), data[:, [6, 7, 0]][:, :, [1, 2]])
    assert check_scan_store(path).ok
    assert "no checksums" in st.describe()
    # a schema-1 store that lost a chunk says schema 1 omitted all-zero chunks
    os.remove(os.path.join(path, "intensity", "c", "0", "1", "1", "0", "0"))
    with pytest.raises(ScanStoreError, match="schema version 1 omitted all-zero chunks"):
        open_scan_store(path)


def test_intensity_group_plain_folder_and_file_are_named(tmp_path):
    path = str(tmp_path / "g.zarr")
    g = zarr.open_group(path, mode="w", zarr_format=3)
    g.attrs.update({**META.to_attrs(), "complete": True})
    g.create_group("intensity").create_array("data", shape=SHAPE, dtype="float32")
    with pytest.raises(ScanStoreError, match="'intensity' is a Zarr group, not an array"):
        open_scan_store(path)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("hi")
    with pytest.raises(ScanStoreError, match=r"exists but is not a Zarr group \(no zarr\.json\)"):
        open_scan_store(plain)
    with pytest.raises(ScanStoreError, match="is a file, not a scan store"):
        open_scan_store(plain / "notes.txt")


BASE = dict(energy=300e3, semiangle=20.0, defocus=(-20, 0, 20), scan_step=0.2, detector_sampling=0.08,
            detector_center=(4, 4))


@pytest.mark.parametrize("change,message", [
    (dict(energy=1e30), r"energy 1e\+30 eV is outside the plausible range 10 keV–3 MeV \(10000–3000000 eV\); "
                        r"give the beam energy in eV, e.g. 300000"),
    (dict(energy=300.0), r"energy 300 eV is outside the plausible range"),
    (dict(semiangle=3000), r"semiangle 3000 mrad is outside the plausible range 0.1–200 mrad"),
    (dict(semiangle=0.01), r"semiangle 0.01 mrad is outside"),
    (dict(defocus=(-1e-9, 0, 1e-9)), r"defocus step 1e-09 Å .* below the plausible minimum 0.1 Å"),
    (dict(defocus=(-2e5, 0, 2e5)), r"defocus -200000 Å is outside the plausible range \|Δf\| ≤ 1e5 Å"),
    (dict(scan_step=1e-5), r"scan_step 1e-05 Å is outside the plausible range 0.001–1000 Å"),
    (dict(scan_step=(0.2, 5e3)), r"scan_step 5000 Å is outside"),
    (dict(detector_sampling=100.0), r"detector_sampling 100 1/Å is 1.97e\+03 mrad per pixel at 300 kV, outside the "
                                    r"plausible range 0.001–50 mrad per pixel"),
    (dict(detector_sampling=1e-5), r"detector_sampling 1e-05 1/Å is 0.000197 mrad per pixel"),
    (dict(detector_center=(np.nan, 4)), r"detector_center must be two finite"),
])
def test_implausible_metadata_is_refused_with_the_range(change, message):
    with pytest.raises(ScanStoreError, match=message) as err:
        ScanMetadata(**{**BASE, **change})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("change", [
    dict(),  # 300 kV, 20 mrad, ±20 Å
    dict(energy=60e3, semiangle=35.0, detector_sampling=0.2),
    dict(energy=200e3, semiangle=0.5, defocus=(-5000, 0, 5000), scan_step=50.0, detector_sampling=0.01),
    dict(energy=80e3, defocus=(-0.1, 0, 0.1), scan_step=(0.05, 0.07)),
])
def test_typical_metadata_passes(change):
    m = ScanMetadata(**{**BASE, **change})
    assert m.energy == {**BASE, **change}["energy"]

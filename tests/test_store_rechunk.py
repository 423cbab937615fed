"""Rewriting a store in another layout keeps every value: float patterns and uint16 counts with their scale,
the metadata and the truth; sharded stores keep the integrity checks (a truncated shard is named); the
reconstruction of the rewritten store equals the original's; bad requests are refused with one line."""

import json
import os

import numpy as np
import pytest

from flowtie_dask.cli.main import main
from flowtie_dask.store import ScanStoreError, open_scan_store, read_block, rechunk_store
from tests.cli.catalogue import assert_refused


@pytest.fixture
def sim(gaas16):
    return gaas16


def _codec(array) -> dict:
    inner = array.metadata.codecs[0].to_dict() if array.shards else None
    chain = inner["configuration"]["codecs"] if inner else [c.to_dict() for c in array.metadata.codecs]
    return next(c["configuration"] for c in chain if c["name"] == "blosc")


def test_fast_layout_keeps_every_value_the_metadata_and_the_truth(sim, tmp_path):
    out = rechunk_store(sim, tmp_path / "fast.zarr", layout="fast", chunks=(4, 4), shards=(8, 8), progress=False)
    a, b = open_scan_store(sim), open_scan_store(out)
    np.testing.assert_array_equal(b.intensity[...], a.intensity[...])
    assert b.intensity.dtype == a.intensity.dtype
    assert tuple(b.intensity.shards) == (1, 8, 8, 16, 16) and tuple(b.intensity.chunks) == (1, 4, 4, 16, 16)
    assert _codec(b.intensity)["cname"] == "lz4" and _codec(a.intensity)["cname"] == "zstd"
    assert b.metadata.replace(provenance={}) == a.metadata.replace(provenance={})
    assert b.metadata.provenance["rechunked_from"] == os.path.abspath(sim)
    np.testing.assert_array_equal(b.truth["projected_phase"][...], a.truth["projected_phase"][...])
    assert dict(b.truth.attrs) == dict(a.truth.attrs)
    # 4 shard files per scan instead of 16 chunk files
    files = [f for _, _, fs in os.walk(os.path.join(out, "intensity", "c")) for f in fs]
    assert len(files) == 3 * 4


def test_the_rewritten_store_reconstructs_identically(sim, tmp_path):
    from flowtie_dask.methods import get_method
    from flowtie_dask.runner import reconstruct

    out = rechunk_store(sim, tmp_path / "fast.zarr", progress=False)
    ra = reconstruct(str(sim), get_method("tie"), tile_size=8, halo=4, progress=False)
    rb = reconstruct(str(out), get_method("tie"), tile_size=8, halo=4, progress=False)
    np.testing.assert_array_equal(rb.phase, ra.phase)


def test_counts_stay_uint16_with_their_scale(tmp_path):
    from flowtie_dask.interop.frames import import_frames
    from flowtie_dask.interop.microscope_log import read_microscope_log
    from tests.interop.test_frames import series, write_log

    def save(path, s):
        np.save(path, s.reshape((-1,) + s.shape[-2:]))
        return path

    scans, files = series(tmp_path, save, ".npy")
    src = import_frames(*files, out=tmp_path / "n.zarr", log=read_microscope_log(write_log(tmp_path)),
                        intensity_scale=[1.0, 2.0, 0.5])
    out = rechunk_store(src, tmp_path / "fast.zarr", chunks=(2, 2), shards=(4, 4), progress=False)
    b = open_scan_store(out)
    assert b.intensity.dtype == np.uint16 and b.intensity.attrs["scale"] == [1.0, 2.0, 0.5]
    for i in range(3):
        np.testing.assert_array_equal(b.intensity[i], scans[i])
    np.testing.assert_array_equal(read_block(out, range(6), range(5)), read_block(src, range(6), range(5)))


def test_a_truncated_shard_is_named_when_read(sim, tmp_path):
    out = rechunk_store(sim, tmp_path / "fast.zarr", chunks=(4, 4), shards=(8, 8), progress=False)
    shard = os.path.join(out, "intensity", "c", "1", "0", "1", "0", "0")
    assert os.path.isfile(shard)
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    with pytest.raises(ScanStoreError, match=r"intensity/c/1/0/1/0/0.*(corrupt|missing)"):
        read_block(out, range(16), range(16))
    from flowtie_dask.store import check_scan_store

    bad = check_scan_store(out)
    assert not bad.ok and "c/1/0/1/0/0" in bad.summary()


def test_a_corrupt_source_chunk_is_named_and_nothing_is_written(sim, tmp_path):
    import shutil

    src = tmp_path / "src.zarr"
    shutil.copytree(sim, src)
    chunk = next(os.path.join(d, f) for d, _, fs in os.walk(src / "intensity" / "c") for f in fs)
    with open(chunk, "r+b") as f:
        f.seek(20)
        f.write(b"\x00" * 16)
    out = tmp_path / "fast.zarr"
    with pytest.raises(ScanStoreError, match="corrupt"):
        rechunk_store(src, out, progress=False)
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".fast")]


def test_bad_requests_are_refused_on_the_command_line(sim, tmp_path, capsys):
    assert_refused(["rechunk", str(sim), "--out", str(sim / "x.zarr")], match="inside", inputs=[sim],
                   outputs=[sim / "x.zarr"], capsys=capsys)
    out = tmp_path / "n.zarr"
    assert_refused(["rechunk", str(sim), "--out", str(out), "--chunk", "4", "--shard", "6"],
                   match=r"shards .* must be whole multiples of the chunks", inputs=[sim], outputs=[out],
                   capsys=capsys)
    assert main(["rechunk", str(sim), "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "zarr.json").read_text())["attributes"]["complete"] is True

"""The streaming import of camera files: HDF5 frame stacks (bitshuffle-LZ4), 4D HDF5, .npy, raw binary, RosettaSciIO
formats (a .blo written by RosettaSciIO, a Merlin .mib and an EMPAD .xml+.raw written here from their documented
layouts) into scan stores, block by block; counts kept as counts and normalised on reading; bad files refused in one
line with nothing left behind."""

import json
import os
import re

import numpy as np
import pytest

from flowtie_dask.cli.main import main
from flowtie_dask.interop.frames import HDF5Frames, frame_format, import_frames, open_frames
from flowtie_dask.interop.microscope_log import read_microscope_log
from flowtie_dask.interop.frames.rosetta import RSCIIO_READERS
from flowtie_dask.physics import wavelength
from flowtie_dask.store import electrons_per_pattern, open_scan_store, read_block
from tests.cli.catalogue import assert_refused

h5py = pytest.importorskip("h5py")
hdf5plugin = pytest.importorskip("hdf5plugin")

SCAN, DET = (6, 5), (8, 8)
LOG = {"high_tension_kV": 300, "convergence_semiangle_mrad": 20, "defocus_nm": [-2, 0, 2],
       "defocus_sign": "positive = underfocus", "scan_shape": list(SCAN), "scan_step_nm": 0.02,
       "detector_mrad_per_pixel": 1.5, "detector_binning": 2, "operator": "test"}
EXPERIMENT = "/work/shared/data/experiment_like/si_300kV"


def counts(seed, shape=SCAN + DET, dtype=np.uint16, lam=40.0):
    """Poisson counts with a bright disk, as a counting camera records them."""
    rng = np.random.default_rng(seed)
    q = np.hypot(*np.meshgrid(np.arange(shape[-2]) - shape[-2] // 2, np.arange(shape[-1]) - shape[-1] // 2,
                              indexing="ij"))
    return rng.poisson(lam * (q < shape[-1] / 4) + 1.0, size=shape).astype(dtype)


def write_log(tmp_path, drop=(), **changes):
    path = tmp_path / "microscope.json"
    path.write_text(json.dumps({k: v for k, v in {**LOG, **changes}.items() if k not in drop}))
    return str(path)


def write_h5(path, data, *, frames=True, dataset="entry/data/data", compression=None):
    data = data.reshape((-1,) + data.shape[-2:]) if frames else data
    chunks = (1,) + data.shape[1:] if frames else (1, 1) + data.shape[2:]
    with h5py.File(path, "w") as f:
        f.create_dataset(dataset, data=data, chunks=chunks,
                         **(compression if compression is not None else hdf5plugin.Bitshuffle(cname="lz4")))
    return str(path)


def series(tmp_path, writer, ext, **kw):
    scans = [counts(i, **kw) for i in range(3)]
    return scans, [writer(str(tmp_path / f"scan_{n}{ext}"), s) for n, s in zip(("minus", "focus", "plus"), scans)]


def cli(files, out, *flags):
    return main(["import", *files, "--out", str(out), *flags])


def binned(x, b):
    r, c, qx, qy = x.shape
    return x.reshape(r, c, qx // b, b, qy // b, b).sum(axis=(3, 5), dtype=np.int64)


# ---------------------------------------------------------------------------------------------- HDF5
def test_hdf5_frame_stack_bitshuffle_lz4_keeps_uint16_counts_and_metadata_from_the_log(tmp_path, capsys):
    scans, files = series(tmp_path, write_h5, ".h5")
    with h5py.File(files[0]) as f:  # really bitshuffle-compressed frames
        assert 32008 in f["entry/data/data"]._filters or "32008" in str(f["entry/data/data"]._filters)
    out = tmp_path / "s.zarr"
    assert cli(files, out, "--meta", write_log(tmp_path), "--chunk", "4", "3") == 0
    assert "MB/s" in capsys.readouterr().err
    store = open_scan_store(out)
    assert store.intensity.dtype == np.uint16 and store.intensity.shape == (3,) + SCAN + DET
    for i in range(3):
        np.testing.assert_array_equal(store.intensity[i], scans[i])
    m = store.metadata
    assert (m.energy, m.semiangle, m.defocus) == (300e3, 20.0, (-20.0, 0.0, 20.0))
    assert m.scan_step == pytest.approx((0.2, 0.2))
    assert m.detector_sampling == pytest.approx((1.5e-3 / wavelength(300e3),) * 2)
    assert m.detector_center == (4.0, 4.0)
    p = m.provenance
    assert p["format"] == ["hdf5"] * 3 and p["dataset"] == ["entry/data/data"] * 3 and p["binning"] == 1
    assert p["files"] == [os.path.abspath(f) for f in files] and p["store_dtype"] == "uint16"
    assert p["microscope_log"] == str(tmp_path / "microscope.json") and p["camera_binning"] == 2
    assert p["microscope_log_extra"] == {"operator": "test"}
    means = [s.sum(axis=(2, 3), dtype=np.float64).mean() for s in scans]
    assert p["mean_counts_per_pattern"] == pytest.approx(means)
    assert electrons_per_pattern(store) == pytest.approx(means[1])  # the focus scan's mean counts (Δf = 0)
    # counts on disk, normalised on reading: the methods see patterns of mean sum 1, as with the py4DSTEM import
    block = read_block(str(out), range(SCAN[0]), range(SCAN[1]))
    assert block.dtype == np.float32
    np.testing.assert_allclose(block, np.stack(scans) / np.array(means)[:, None, None, None, None], rtol=1e-6)
    assert block.sum(axis=(3, 4)).mean(axis=(1, 2)) == pytest.approx([1, 1, 1], rel=1e-5)
    np.testing.assert_array_equal(read_block(str(out), [1, 2], [0], defocus=[2], scaled=False, dtype=np.uint16),
                                  scans[2][1:3, :1][None])
    np.testing.assert_allclose(store.to_dask()[1].compute(), block[1], rtol=1e-6)
    assert "counts read × scale" in store.describe()
    # flags override the log; the sampling is per pixel of the files, times the binning
    out2 = tmp_path / "s2.zarr"
    assert cli(files, out2, "--meta", write_log(tmp_path), "--scan-step", "0.3", "0.4", "--detector-sampling",
               "0.05", "--bin", "2", "--semiangle", "21", "--threads", "1") == 0
    m2 = open_scan_store(out2).metadata
    assert m2.scan_step == (0.3, 0.4) and m2.detector_sampling == pytest.approx((0.1, 0.1)) and m2.semiangle == 21
    assert m2.provenance["scan_step_from"] == "argument --scan-step" and m2.provenance["binning"] == 2


def test_hdf5_4d_dataset_binned_sums_pixels_and_scales_the_sampling(tmp_path):
    scans, files = series(tmp_path, lambda p, s: write_h5(p, s, frames=False, dataset="scan/patterns"), ".h5")
    out = import_frames(*files, out=tmp_path / "b.zarr", log=read_microscope_log(write_log(tmp_path)), binning=2,
                        detector_center=(4.5, 3.5), chunks=(4, 4))
    store = open_scan_store(out)
    assert store.intensity.shape == (3,) + SCAN + (4, 4)
    assert store.intensity.dtype == np.float32  # 4 × 65535 does not fit uint16: exact counts in float32
    for i in range(3):
        np.testing.assert_array_equal(store.intensity[i], binned(scans[i], 2))
    m = store.metadata
    assert m.detector_sampling == pytest.approx((2 * 1.5e-3 / wavelength(300e3),) * 2)
    assert m.detector_center == (2.0, 1.5)  # (c − (b − 1)/2) / b
    assert m.provenance["binning"] == 2 and m.provenance["dataset"] == ["scan/patterns"] * 3
    # uint8 frames binned 2×2 still fit uint16
    small = [counts(i, dtype=np.uint8) for i in range(3)]
    files8 = [write_h5(str(tmp_path / f"u8_{i}.h5"), s) for i, s in enumerate(small)]
    out8 = import_frames(*files8, out=tmp_path / "u8.zarr", log=read_microscope_log(write_log(tmp_path)), binning=2)
    st8 = open_scan_store(out8)
    assert st8.intensity.dtype == np.uint16
    np.testing.assert_array_equal(st8.intensity[2], binned(small[2], 2))


@pytest.mark.parametrize("codec", ["LZ4", "Blosc", "Zstd", "gzip"])
def test_hdf5_compression_filters_of_cameras(tmp_path, codec):
    compression = {"compression": "gzip"} if codec == "gzip" else dict(getattr(hdf5plugin, codec)())
    scans = [counts(i) for i in range(3)]
    files = [write_h5(str(tmp_path / f"{codec}{i}.h5"), s, compression=compression) for i, s in enumerate(scans)]
    out = import_frames(*files, out=tmp_path / "z.zarr", log=read_microscope_log(write_log(tmp_path)))
    np.testing.assert_array_equal(open_scan_store(out).intensity[:], np.stack(scans))


def test_reads_are_by_store_block_never_the_whole_scan(tmp_path, monkeypatch):
    shape = (12, 10) + DET
    scans = [counts(i, shape=shape) for i in range(3)]
    files = [write_h5(str(tmp_path / f"f{i}.h5"), s) for i, s in enumerate(scans)]
    asked = []
    read = HDF5Frames._read

    def counting(self, rows, cols):
        asked.append((rows.stop - rows.start, cols.stop - cols.start))
        return read(self, rows, cols)

    monkeypatch.setattr(HDF5Frames, "_read", counting)
    out = import_frames(*files, out=tmp_path / "c.zarr", log=read_microscope_log(write_log(tmp_path)),
                        scan_shape=shape[:2], chunks=(4, 4), threads=2)
    assert len(asked) == 3 * 3 * 3  # three files × 3×3 blocks, each read once
    assert max(r for r, _ in asked) <= 4 and max(c for _, c in asked) <= 4
    assert sum(r * c for r, c in asked) == 3 * 12 * 10  # every position read exactly once per file
    np.testing.assert_array_equal(open_scan_store(out).intensity[1], scans[1])


def test_import_memory_follows_the_block_not_the_scan(tmp_path):
    """Python-level peak allocations (tracemalloc: NumPy's buffers included) of a 4× larger scan stay flat, well
    below one scan (after a first import has loaded every module and cache)."""
    import tracemalloc

    peaks = []
    for side in (4, 8, 16):
        files = [write_h5(str(tmp_path / f"m{side}_{i}.h5"), counts(i, shape=(side, side, 64, 64))) for i in range(3)]
        tracemalloc.start()
        import_frames(*files, out=tmp_path / f"m{side}.zarr", log=read_microscope_log(write_log(tmp_path)),
                      scan_shape=(side, side), chunks=(4, 4), client="inline")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    scan_bytes = 16 * 16 * 64 * 64 * 2  # the largest scan; a block (4×4 patterns) is 1/16 of it
    assert peaks[2] < 1.5 * peaks[1] and peaks[2] < scan_bytes / 2, (peaks, scan_bytes)


# -------------------------------------------------------------------------------------- npy and raw
def test_npy_frames_and_4d_float_npy(tmp_path):
    def save(path, s):
        np.save(path, s.reshape((-1,) + DET))
        return path

    scans, files = series(tmp_path, save, ".npy")
    assert frame_format(files[0]) == "npy"
    out = import_frames(*files, out=tmp_path / "n.zarr", log=read_microscope_log(write_log(tmp_path)))
    store = open_scan_store(out)
    assert store.intensity.dtype == np.uint16
    np.testing.assert_array_equal(store.intensity[0], scans[0])
    given = import_frames(*files, out=tmp_path / "g.zarr", log=read_microscope_log(write_log(tmp_path)),
                          intensity_scale=[1.0, 2.0, 0.5])  # recorded as the scale, never applied to the values
    assert open_scan_store(given).intensity.attrs["scale"] == [1.0, 2.0, 0.5]
    # a scale given by the user is not the dose: the electrons are the counts import measured
    assert electrons_per_pattern(open_scan_store(given)) == pytest.approx(scans[1].sum(axis=(2, 3)).mean())
    np.testing.assert_array_equal(read_block(given, range(6), range(5), defocus=[1])[0], 2.0 * scans[1])
    floats = [s.astype(np.float64) * 0.5 for s in scans]
    ffiles = []
    for i, s in enumerate(floats):
        np.save(tmp_path / f"f{i}.npy", s)
        ffiles.append(str(tmp_path / f"f{i}.npy"))
    out = import_frames(*ffiles, out=tmp_path / "f.zarr", log=read_microscope_log(write_log(tmp_path, drop=["scan_shape"])),
                        scan_step=0.3)
    store = open_scan_store(out)
    assert store.intensity.dtype == np.float32 and store.metadata.scan_step == (0.3, 0.3)
    assert electrons_per_pattern(store) == 0.0  # floats: their scale says nothing of the counts
    np.testing.assert_array_equal(store.intensity[2], floats[2].astype(np.float32))


def test_raw_binary_with_header_and_big_endian_uint32(tmp_path):
    scans = [counts(i) for i in range(3)]
    files = []
    for i, s in enumerate(scans):
        path = tmp_path / f"scan{i}.raw"
        path.write_bytes(b"H" * 64 + s.astype(">u4").tobytes())
        files.append(str(path))
    out = tmp_path / "r.zarr"
    assert cli(files, out, "--meta", write_log(tmp_path), "--dtype", ">u4", "--shape", "8", "8",
               "--offset", "64") == 0
    store = open_scan_store(out)
    assert store.intensity.dtype == np.float32  # uint32 counts: float32 (exact to 2²⁴), scale recorded
    np.testing.assert_array_equal(store.intensity[1], scans[1].astype(np.float32))
    assert store.metadata.provenance["format"] == ["raw"] * 3
    assert store.metadata.provenance["reader"][0]["raw_offset"] == 64


# ------------------------------------------------------------------------------------- RosettaSciIO
def write_blo(path, data):
    from rsciio.blockfile import file_writer

    names = [("y", 0.02, "nm", True), ("x", 0.02, "nm", True), ("ky", 1.0, "", False), ("kx", 1.0, "", False)]
    axes = [dict(name=n, size=data.shape[i], scale=sc, offset=0.0, units=u, navigate=nav, index_in_array=i)
            for i, (n, sc, u, nav) in enumerate(names)]
    with pytest.warns(UserWarning):  # the format wants cm on the detector axes; they are uncalibrated here
        file_writer(path, {"data": data, "axes": axes, "metadata": {"General": {"title": "t"}, "Signal": {}},
                           "original_metadata": {}, "attributes": {"_lazy": False}})
    return path


def write_mib(path, data):
    """Merlin .mib, its documented layout: per frame a 384-byte ASCII header (comma-separated: "MQ1", frame
    number, header size "00384", chips, width, height, "U16", …, timestamp, exposure "…ns", counter depth)
    followed by the frame as big-endian uint16, frames in scan order."""
    frames = data.reshape((-1,) + data.shape[-2:])
    with open(path, "wb") as f:
        for k, frame in enumerate(frames):
            fields = ["MQ1", f"{k + 1:06d}", "00384", "01", f"{frame.shape[1]:04d}", f"{frame.shape[0]:04d}", "U16",
                      "   1x1", "01", "2024-01-01 00:00:00.000000", "0.001000", "0", "0", "0", "MQ1A",
                      f"2024-01-01T00:00:{k % 60:02d}.000000000Z", "1000000ns", "12", ""]
            f.write(",".join(fields).ljust(384).encode())
            f.write(frame.astype(">u2").tobytes())
    return path


def write_empad(path, data):
    """EMPAD: an XML naming the raw file and the scan size; the raw file holds 128×130 float32 frames (two footer
    rows), row-major scan order."""
    raw = os.path.splitext(path)[0] + ".raw"
    frames = np.zeros((data.shape[0] * data.shape[1], 130, 128), "<f4")
    frames[:, :128] = data.reshape(-1, 128, 128)
    frames.tofile(raw)
    with open(path, "w") as f:
        f.write(f'<?xml version="1.0"?><root><raw_file filename="{os.path.basename(raw)}"/>'
                f"<pix_x>{data.shape[1]}</pix_x><pix_y>{data.shape[0]}</pix_y></root>")
    return path


def _signal(data):
    """A RosettaSciIO signal dictionary of a 4D-STEM scan (scan axes navigate, 0.02 nm steps)."""
    names = [("y", 0.02, "nm", True), ("x", 0.02, "nm", True), ("ky", 1.0, "1/nm", False), ("kx", 1.0, "1/nm", False)]
    axes = [dict(name=n, size=data.shape[i], scale=sc, offset=0.0, units=u, navigate=nav, index_in_array=i)
            for i, (n, sc, u, nav) in enumerate(names)]
    return {"data": data, "axes": axes, "original_metadata": {}, "attributes": {"_lazy": False},
            "metadata": {"General": {"title": "t", "date": "2024-01-01", "time": "00:00:00"}, "Signal": {}},
            "tmp_parameters": {}, "learning_results": {}, "models": {}, "package_info": {"name": "tests", "version": "0"}}


def write_with_rsciio(plugin):
    """A writer through RosettaSciIO's own ``file_writer`` of ``plugin``; returns the file its reader opens
    (TVIPS writes ``name_000.tvips``, the first file of a series)."""
    def write(path, data):
        import importlib

        importlib.import_module(f"rsciio.{plugin}").file_writer(path, _signal(data))
        if plugin == "tvips":
            return os.path.splitext(path)[0] + "_000.tvips"
        return path
    return write


def write_mrc(path, data):
    """MRC2014 as its specification lays it out (a frame stack, as Direct Electron cameras write 4D-STEM): a
    1024-byte header (NX NY NZ, MODE 6 = uint16, MX MY MZ, cell, angles, axis map, min/max/mean, "MAP ", the
    machine stamp of little-endian), then the frames."""
    import struct

    frames = data.reshape((-1,) + data.shape[-2:])
    nz, ny, nx = frames.shape
    h = bytearray(1024)
    struct.pack_into("<4i", h, 0, nx, ny, nz, 6)
    struct.pack_into("<3i3f3f3i3f", h, 28, nx, ny, nz, nx, ny, nz, 90, 90, 90, 1, 2, 3,
                     frames.min(), frames.max(), frames.mean())
    h[208:216] = b"MAP " + bytes([0x44, 0x44, 0, 0])
    with open(path, "wb") as f:
        f.write(bytes(h) + frames.astype("<u2").tobytes())
    return path


ROSETTA_WRITTEN = {"tvips": (".tvips", "tvips"), "hspy": (".hspy", "hspy"), "emd": (".emd", "emd")}


@pytest.mark.parametrize("fmt", ["blo", "mib", "empad", "mrc", *ROSETTA_WRITTEN])
def test_rosettasciio_formats(tmp_path, fmt, monkeypatch):
    pytest.importorskip("rsciio")
    from flowtie_dask.interop.frames import rosetta

    asked, load = [], rosetta._load
    monkeypatch.setattr(rosetta, "_load", lambda *a: asked.append(dict(a[3])) or load(*a))
    if fmt == "blo":
        scans, files = series(tmp_path, write_blo, ".blo", dtype=np.uint8, lam=20.0)
        expect, extra = scans, {}
    elif fmt == "mib":
        scans, files = series(tmp_path, write_mib, ".mib")
        expect, extra = [np.flip(s, axis=-2) for s in scans], {}  # RosettaSciIO turns Merlin's frames upright
    elif fmt == "mrc":
        scans, files = series(tmp_path, write_mrc, ".mrc")
        expect, extra = scans, {}
    elif fmt == "empad":
        scans, files = series(tmp_path, write_empad, ".xml", shape=(3, 4, 128, 128), dtype=np.float32)
        expect, extra = scans, {"scan_shape": [3, 4]}
    else:  # written by the format's own library (TVIPS: a frame stack, the scan shape from the log)
        ext, plugin = ROSETTA_WRITTEN[fmt]
        scans, files = series(tmp_path, write_with_rsciio(plugin), ext)
        expect, extra = scans, {}
    # a .blo records its scan step (0.02 nm): with none in the log it comes from the file
    log = read_microscope_log(write_log(tmp_path, drop=["scan_step_nm"] if fmt == "blo" else [], **extra))
    out = import_frames(*files, out=tmp_path / f"{fmt}.zarr", log=log, chunks=(2, 2))
    store = open_scan_store(out)
    assert store.intensity.dtype == (np.float32 if fmt == "empad" else np.uint16)
    for i in range(3):
        np.testing.assert_array_equal(store.intensity[i], expect[i])
    p = store.metadata.provenance
    assert p["format"][0].startswith("rosettasciio:")
    if fmt == "blo":
        assert store.metadata.scan_step == pytest.approx((0.2, 0.2)) and p["scan_step_from"] == "the files"
        assert {"chunks": (2, 2, -1, -1)} in asked  # the tasks asked the reader for chunks of one store block


def test_rosettasciio_source_is_picklable_and_reads_blocks(tmp_path):
    import pickle

    data = counts(0)
    path = write_mib(str(tmp_path / "a.mib"), data)
    with open_frames(path, scan_shape=SCAN, block=(2, 3)) as src:
        assert src.shape == SCAN + DET and src.dtype == np.uint16
        again = pickle.loads(pickle.dumps(src))
        np.testing.assert_array_equal(again.read(slice(1, 3), slice(2, 5)), np.flip(data, -2)[1:3, 2:5])


# ------------------------------------------------------------------------------------------- refusals
def _corrupt_h5(tmp_path):
    scans, files = series(tmp_path, write_h5, ".h5")
    with h5py.File(files[1]) as f:
        offset = f["entry/data/data"].id.get_chunk_info(7).byte_offset
    with open(files[1], "r+b") as f:  # overwrite the compressed bytes of frame 7: the file opens, the frame won't
        f.seek(offset)
        f.write(b"\xff" * 48)
    return files


BAD = {
    "not-hdf5": lambda t: [str(t / "x.h5")] * 3,
    "missing-dataset": lambda t: series(t, write_h5, ".h5")[1],
    "frame-count": lambda t: series(t, write_h5, ".h5")[1],
    "corrupt-frame": _corrupt_h5,
    "bad-npy": lambda t: [str(t / "x.npy")] * 3,
    "raw-size": lambda t: [str(t / "x.raw")] * 3,
    "bad-mib": lambda t: [str(t / "x.mib")] * 3,
    "shapes-differ": lambda t: [write_h5(str(t / "a.h5"), counts(0)), write_h5(str(t / "b.h5"), counts(1)),
                                write_h5(str(t / "c.h5"), counts(2, shape=(6, 5, 8, 6)))],
    "no-scan-step": lambda t: series(t, write_h5, ".h5")[1],
    "bin-does-not-divide": lambda t: series(t, write_h5, ".h5")[1],
    "4d-scan-shape": lambda t: series(t, lambda p, s: write_h5(p, s, frames=False), ".h5")[1],
}
# a file of each other kind RosettaSciIO reads, holding garbage: its reader's failure is one line naming it
BAD_ROSETTA = ("dm3", "dm4", "blo", "tvips", "mrc", "ser", "emd", "hspy", "xml")
for _ext in BAD_ROSETTA:
    BAD[f"bad-{_ext}"] = (lambda e: lambda t: [str(t / f"x.{e}")] * 3)(_ext)
FLAGS = {"missing-dataset": ["--dataset", "entry/nope"], "frame-count": ["--scan-shape", "5", "5"],
         "raw-size": ["--dtype", "uint16", "--shape", "30", "8", "8"], "bin-does-not-divide": ["--bin", "3"],
         "4d-scan-shape": ["--scan-shape", "3", "10"]}
SAYS = {"not-hdf5": "not a readable HDF5 file", "missing-dataset": "no dataset 'entry/nope'",
        "frame-count": "30 frames but the scan shape 5×5 needs 25", "corrupt-frame": "cannot read 'entry/data/data'",
        "bad-npy": "not a readable NumPy .npy file", "raw-size": "check --shape, --dtype and --offset",
        "bad-mib": "RosettaSciIO's quantumdetector reader cannot read it", "shapes-differ": "the three scans must",
        "no-scan-step": "no scan step: give --scan-step", "bin-does-not-divide": "does not divide into 3×3 bins",
        "4d-scan-shape": "has a 6×5 scan but the scan shape given is 3×10 (--scan-shape, or the log's scan_shape)",
        **{f"bad-{e}": f"RosettaSciIO's {RSCIIO_READERS[e]} reader cannot read it" for e in BAD_ROSETTA},
        "bad-emd": "not a readable HDF5 file"}  # an HDF5 container, tried as a frame stack first


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, capsys, case):
    for name in ("x.h5", "x.npy", "x.raw", "x.mib", *(f"x.{e}" for e in BAD_ROSETTA)):
        (tmp_path / name).write_bytes(b"this is not a camera file " * 20)
    files = BAD[case](tmp_path)
    log = write_log(tmp_path, drop=["scan_step_nm"] if case == "no-scan-step" else [])
    out = tmp_path / "out.zarr"
    line = assert_refused(["import", *files, "--out", out, "--meta", log, *FLAGS.get(case, [])],
                          match=re.escape(SAYS[case]), inputs=[*files, log], outputs=[out], capsys=capsys)
    assert any(os.path.basename(f) in line for f in files) or case == "no-scan-step", line
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".out.zarr")]  # no partial, no lock


def test_unknown_format_and_raw_without_dtype(tmp_path):
    (tmp_path / "a.xyz").write_bytes(b"0" * 10)
    (tmp_path / "a.raw").write_bytes(b"0" * 10)
    with pytest.raises(ValueError, match="unknown format .xyz"):
        frame_format(tmp_path / "a.xyz")
    with pytest.raises(ValueError, match="needs --dtype"):
        frame_format(tmp_path / "a.raw")


# --------------------------------------------------------------------------------- the real frames
@pytest.mark.skipif(not os.path.exists(os.path.join(EXPERIMENT, "scan_focus.h5")),
                    reason=f"experiment-like data not found at {EXPERIMENT} (not shipped with the repository)")
def test_experiment_like_si_series_imports_end_to_end(tmp_path, capsys):
    files = [os.path.join(EXPERIMENT, f"scan_{n}.h5") for n in ("minus", "focus", "plus")]
    out = tmp_path / "si.zarr"
    assert main(["import", *files, "--dataset", "entry/data/data", "--meta", os.path.join(EXPERIMENT, "microscope.json"),
                 "--out", str(out)]) == 0
    store = open_scan_store(out)
    assert store.intensity.shape == (3, 40, 40, 64, 64) and store.intensity.dtype == np.uint16
    with h5py.File(files[1]) as f:
        np.testing.assert_array_equal(store.intensity[1], f["entry/data/data"][:].reshape(40, 40, 64, 64))
    m = store.metadata
    assert m.energy == 300e3 and m.defocus == (-20.0, 0.0, 20.0) and m.scan_step == pytest.approx((0.1697,) * 2)
    assert m.detector_sampling[0] * wavelength(300e3) * 1e3 == pytest.approx(1.8125163716713204)
    block = read_block(str(out), range(40), range(40), defocus=[1])
    assert block.sum(axis=(3, 4)).mean() == pytest.approx(1.0, rel=1e-5)

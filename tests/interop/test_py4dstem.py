"""py4DSTEM interop: DataCubes/files ↔ scan stores, results → RealSlice files, and the CLI commands."""

import json
import os

import numpy as np
import pytest

from flowtie_dask.cli.main import main
from flowtie_dask.interop import (
    datacubes_to_store,
    export_result,
    export_store,
    import_files,
    store_to_datacubes,
)
from flowtie_dask.physics import wavelength
from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store
from flowtie_dask.store import open_scan_store
from tests.conftest import EXTERNAL

py4DSTEM = pytest.importorskip("py4DSTEM", reason="py4DSTEM (the [dev] extra) is needed for interop")


@pytest.fixture(scope="module")
def sim_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "gaas.zarr"
    params = SimulationParameters(material="GaAs", lateral_cells=1, scan_pixels=8, detector_pixels=16, gpts=24)
    return simulate_to_store(params, str(path), progress=False)


def make_cube(data, *, r=(0.5, "A"), q=(0.1, "A^-1"), name="cube"):
    cube = py4DSTEM.DataCube(data=data, name=name)
    cal = cube.calibration
    if r is not None:
        cal.set_R_pixel_size(r[0])
        cal.set_R_pixel_units(r[1])
    if q is not None:
        cal.set_Q_pixel_size(q[0])
        cal["Q_pixel_units"] = q[1]  # item assignment bypasses py4DSTEM's unit whitelist (for nm^-1)
    return cube


def three_cubes(rng, shape=(4, 5, 6, 7), dtype=np.float32, **kwargs):
    return [make_cube((rng.random(shape) * 100).astype(dtype), name=f"c{i}", **kwargs) for i in range(3)]


OPTICS = dict(defocus=(-20.0, 0.0, 20.0), energy=300e3, semiangle=20.0)


# ------------------------------------------------------------------------------------------- round trip
def test_round_trip_through_py4dstem_files(sim_store, tmp_path):
    src = open_scan_store(sim_store)
    m = src.metadata
    files = export_store(sim_store, tmp_path / "gaas")
    assert [os.path.basename(f) for f in files] == [f"gaas_defocus_{i}.h5" for i in range(3)]
    cube = py4DSTEM.read(files[1])
    assert isinstance(cube, py4DSTEM.DataCube) and cube.data.shape == (8, 8, 16, 16)
    cal = cube.calibration
    assert (cal.get_R_pixel_units(), cal.get_Q_pixel_units()) == ("A", "A^-1")
    assert cal.get_R_pixel_size() == pytest.approx(m.scan_step[0])
    assert cal.get_Q_pixel_size() == pytest.approx(m.detector_sampling[0])
    assert cal.get_origin_mean() == pytest.approx(m.detector_center)

    out = import_files(*files, defocus=m.defocus, energy=m.energy, semiangle=m.semiangle, out=tmp_path / "back.zarr")
    back = open_scan_store(out)
    b = back.metadata
    np.testing.assert_allclose(back.intensity[:], src.intensity[:], rtol=1e-5, atol=0)
    assert b.scan_step == pytest.approx(m.scan_step)
    assert b.detector_sampling == pytest.approx(m.detector_sampling)
    assert b.detector_center == pytest.approx(m.detector_center)
    assert b.defocus == m.defocus and b.energy == m.energy and b.semiangle == m.semiangle
    assert (b.aperture_edge, b.periodic, b.aberrations) == (m.aperture_edge, m.periodic, m.aberrations)
    assert b.provenance["intensity_scale"] == [1.0, 1.0, 1.0]
    assert b.provenance["py4DSTEM_version"] == py4DSTEM.__version__
    assert [os.path.basename(f) for f in b.provenance["files"]] == [os.path.basename(f) for f in files]
    assert b.provenance["mean_counts_per_pattern"] == pytest.approx([0.997] * 3, abs=0.003)

    # the export record catches files given in the wrong order
    with pytest.raises(ValueError, match="order of the defocus"):
        import_files(files[2], files[1], files[0], defocus=m.defocus, energy=m.energy, semiangle=m.semiangle,
                     out=tmp_path / "swapped.zarr")
    assert not os.path.exists(tmp_path / "swapped.zarr")
    assert sorted(os.listdir(tmp_path)) == sorted(["back.zarr"] + [os.path.basename(f) for f in files])


def test_store_to_datacubes_calibration(sim_store):
    m = open_scan_store(sim_store).metadata
    cubes = store_to_datacubes(sim_store)
    assert len(cubes) == 3
    for i, c in enumerate(cubes):
        rec = c.metadata["flowtie_dask"]
        assert rec["defocus_A"] == m.defocus[i] and rec["energy_eV"] == m.energy
        assert c.calibration.get_QR_flip() is False and c.calibration.get_QR_rotation_degrees() == 0.0


@pytest.mark.skipif(not os.path.isdir(EXTERNAL), reason=f"external data not found at {EXTERNAL}")
def test_external_mgo_files_import_with_their_calibration(tmp_path):
    meta = json.load(open(os.path.join(EXTERNAL, "meta.json")))
    files = [os.path.join(EXTERNAL, f) for f in meta["files"]]
    out = import_files(*files, defocus=meta["defocus_A"], energy=meta["energy_eV"],
                       semiangle=meta["semiangle_mrad"], out=tmp_path / "mgo.zarr")
    store = open_scan_store(out)
    m = store.metadata
    assert m.scan_step == pytest.approx((0.351, 0.351))
    assert m.detector_sampling == pytest.approx((0.11871, 0.11871), rel=1e-4)
    assert m.detector_center == (18.0, 18.0)
    assert m.defocus == (-30.0, 0.0, 30.0)
    assert (m.detector_rotation, m.detector_transpose) == (0.0, False)
    scales = m.provenance["intensity_scale"]
    stored = store.intensity[:]
    for i, f in enumerate(files):
        data = py4DSTEM.read(f).data.astype(np.float64)
        assert scales[i] == pytest.approx(1.0 / data.sum(axis=(2, 3)).mean(), rel=1e-6)
        np.testing.assert_allclose(stored[i], data * scales[i], rtol=1e-6)
        assert stored[i].sum(axis=(2, 3)).mean() == pytest.approx(1.0, rel=1e-5)
    assert 1.0 < scales[1] < 1.01  # the files' patterns sum to slightly less than 1 (cropped at 50 mrad)


# ----------------------------------------------------------------------------------- calibration units
def test_mrad_and_nm_calibrations_convert(rng, tmp_path):
    cubes = three_cubes(rng, r=(0.05, "nm"), q=(2.0, "mrad"))
    out = datacubes_to_store(cubes, **OPTICS, out=tmp_path / "mrad.zarr")
    m = open_scan_store(out).metadata
    assert m.scan_step == pytest.approx((0.5, 0.5))
    assert m.detector_sampling[0] == pytest.approx(2e-3 / wavelength(300e3))
    assert m.detector_sampling[0] == pytest.approx(0.101587, rel=1e-4)  # 2 mrad / 0.019687 Å

    cubes = three_cubes(rng, r=(0.7, "Å"), q=(1.5, "nm^-1"))
    m = open_scan_store(datacubes_to_store(cubes, **OPTICS, out=tmp_path / "nm.zarr")).metadata
    assert m.scan_step == pytest.approx((0.7, 0.7))
    assert m.detector_sampling == pytest.approx((0.15, 0.15))


def test_low_energy_import_is_not_refused_for_its_detector_sampling(rng, tmp_path):
    # The optics are checked before the calibration is read, with a placeholder detector sampling; it must be
    # plausible at every energy (a fixed 1/Å is ~70 mrad per pixel at 30 keV, above the 50 mrad limit).
    optics = dict(OPTICS, energy=30e3)
    out = datacubes_to_store(three_cubes(rng, q=(0.5, "mrad")), **optics, out=tmp_path / "30kev.zarr")
    m = open_scan_store(out).metadata
    assert m.energy == 30e3
    assert m.detector_sampling[0] == pytest.approx(0.5e-3 / wavelength(30e3))
    # the real calibration is still checked: 100 mrad per pixel is refused, naming the detector sampling
    with pytest.raises(ValueError, match="detector_sampling .* mrad per pixel at 30 kV"):
        datacubes_to_store(three_cubes(rng, q=(100.0, "mrad")), **optics, out=tmp_path / "bad.zarr")


def test_rotation_flip_origin_and_normalisation(tmp_path):
    data = np.full((4, 5, 6, 7), 2.0, dtype=np.float32)
    data[..., 3, 3] += 58.0  # 60 + 2*41 = 142 counts per pattern
    cubes = [make_cube(data * (i + 1), name=f"c{i}") for i in range(3)]
    for c in cubes:
        c.calibration.set_QR_rotation_degrees(15.0)
        c.calibration.set_QR_flip(True)
        c.calibration.set_origin((3.25, 2.75))
    out = datacubes_to_store(cubes, **OPTICS, out=tmp_path / "rot.zarr", chunks=2)
    store = open_scan_store(out)
    m = store.metadata
    assert (m.detector_rotation, m.detector_transpose) == (15.0, True)
    assert m.detector_center == (3.25, 2.75)
    assert store.intensity.chunks == (1, 2, 2, 6, 7)
    assert m.provenance["intensity_scale"] == pytest.approx([1 / 142, 1 / 284, 1 / 426])
    np.testing.assert_allclose(store.intensity[:].sum(axis=(3, 4)), 1.0, rtol=1e-6)
    # an explicit centre wins over the calibration
    out = datacubes_to_store(cubes, **OPTICS, out=tmp_path / "c.zarr", detector_center=(1, 2), intensity_scale=1.0)
    m = open_scan_store(out).metadata
    assert m.detector_center == (1.0, 2.0) and m.provenance["intensity_scale"] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("dtype", [np.float64, np.uint16])
def test_input_arrays_are_not_modified(rng, tmp_path, dtype):
    cubes = three_cubes(rng, dtype=dtype)
    before = [c.data.copy() for c in cubes]
    datacubes_to_store(cubes, **OPTICS, out=tmp_path / "x.zarr", chunks=(2, 3))
    for c, b in zip(cubes, before):
        assert c.data.dtype == dtype
        np.testing.assert_array_equal(c.data, b)


# -------------------------------------------------------------------------------------------- errors
def test_uncalibrated_scan_is_refused(rng, tmp_path):
    cubes = three_cubes(rng, r=None)
    with pytest.raises(ValueError, match=r"scan step is uncalibrated \(R_pixel_units = 'pixels'\)"):
        datacubes_to_store(cubes, **OPTICS, out=tmp_path / "x.zarr")
    cubes = three_cubes(rng, q=None)
    with pytest.raises(ValueError, match="detector is uncalibrated"):
        datacubes_to_store(cubes, **OPTICS, out=tmp_path / "x.zarr")
    assert not os.path.exists(tmp_path / "x.zarr")


def test_mismatched_cubes_are_refused(rng, tmp_path):
    cubes = three_cubes(rng)
    cubes[2] = make_cube(rng.random((4, 5, 6, 8)).astype(np.float32))
    with pytest.raises(ValueError, match="same scan and detector size"):
        datacubes_to_store(cubes, **OPTICS, out=tmp_path / "x.zarr")
    cubes = three_cubes(rng)
    cubes[1].calibration.set_R_pixel_size(0.6)
    with pytest.raises(ValueError, match=r"scan step \(Å\) 0.6 .* share one calibration"):
        datacubes_to_store(cubes, **OPTICS, out=tmp_path / "x.zarr")
    with pytest.raises(ValueError, match="exactly three"):
        datacubes_to_store(cubes[:2], **OPTICS, out=tmp_path / "x.zarr")
    with pytest.raises(ValueError, match="not a py4DSTEM DataCube"):
        datacubes_to_store([c.data for c in cubes], **OPTICS, out=tmp_path / "x.zarr")
    assert not os.path.exists(tmp_path / "x.zarr")


def test_missing_file_and_file_without_datacube(rng, tmp_path, sim_store):
    files = export_store(sim_store, tmp_path / "s")
    with pytest.raises(ValueError, match=r"the focus file '.*nope\.h5' does not exist"):
        import_files(files[0], tmp_path / "nope.h5", files[2], **OPTICS, out=tmp_path / "x.zarr")
    image = tmp_path / "image.h5"
    py4DSTEM.save(str(image), py4DSTEM.RealSlice(data=rng.random((5, 5)), name="adf"))
    with pytest.raises(ValueError, match=r"holds no py4DSTEM DataCube \(found RealSlice 'adf'\)"):
        import_files(files[0], files[1], image, **OPTICS, out=tmp_path / "x.zarr")
    assert not os.path.exists(tmp_path / "x.zarr")


# --------------------------------------------------------------------------------------- export_result
def write_result(path, rng, amplitude=True):
    import zarr

    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    phase = rng.standard_normal((12, 10)).astype(np.float32)
    g.create_array("phase", data=phase)
    if amplitude:
        g.create_array("amplitude", data=(1 + 0.1 * rng.random((12, 10))).astype(np.float32))
    g.attrs.update({"pixel_size_A": [0.1, 0.1], "origin_A": [1.0, 2.0], "method": "test"})
    return g


def test_export_result_reads_back_as_a_calibrated_realslice(rng, tmp_path):
    g = write_result(tmp_path / "result.zarr", rng)
    out = export_result(tmp_path / "result.zarr", tmp_path / "phase.h5")
    rs = py4DSTEM.read(out)
    assert isinstance(rs, py4DSTEM.RealSlice) and rs.name == "phase"
    np.testing.assert_array_equal(rs.data, g["phase"][:])
    assert rs.calibration.get_R_pixel_size() == pytest.approx(0.1)
    assert rs.calibration.get_R_pixel_units() == "A"
    np.testing.assert_array_equal(rs.tree("amplitude").data, g["amplitude"][:])
    rec = rs.metadata["flowtie_dask"]
    assert list(rec["origin_A"]) == [1.0, 2.0] and rec["phase_units"] == "rad"
    assert json.loads(rec["result_attrs_json"])["method"] == "test"

    with pytest.raises(ValueError, match="already exists"):
        export_result(tmp_path / "result.zarr", out)
    write_result(tmp_path / "r2.zarr", rng, amplitude=False)
    export_result(tmp_path / "r2.zarr", out, overwrite=True)
    assert py4DSTEM.read(out).data.shape == (12, 10)
    assert sorted(os.listdir(tmp_path)) == ["phase.h5", "r2.zarr", "result.zarr"]  # no temporary files left
    import zarr

    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    with pytest.raises(ValueError, match="has no 'phase' array"):
        export_result(tmp_path / "empty.zarr", tmp_path / "y.h5")
    with pytest.raises(ValueError, match="is not a Zarr group"):
        export_result(tmp_path / "r2.zarr" / "phase", tmp_path / "y.h5")


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_import_and_export(sim_store, tmp_path, rng, capsys):
    assert main(["export", sim_store, "--out", str(tmp_path / "sim")]) == 0
    files = [str(tmp_path / f"sim_defocus_{i}.h5") for i in range(3)]
    assert capsys.readouterr().out.split() == files
    store = str(tmp_path / "imp.zarr")
    assert main(["import", *files, "--defocus", "-20", "0", "20", "--energy", "300000", "--semiangle", "20",
                 "--out", store, "--chunk", "4", "--cs", "1e4"]) == 0
    s = open_scan_store(store)
    assert s.intensity.chunks == (1, 4, 4, 16, 16) and s.metadata.aberrations == {"C30": 1e4}
    assert "scan store" in capsys.readouterr().out

    write_result(tmp_path / "res.zarr", rng)
    assert main(["export", str(tmp_path / "res.zarr"), "--out", str(tmp_path / "res.h5")]) == 0
    assert os.path.isfile(tmp_path / "res.h5")

    capsys.readouterr()
    assert main(["import", files[0], str(tmp_path / "missing.h5"), files[2], "--defocus", "-20", "0", "20",
                 "--energy", "300000", "--semiangle", "20", "--out", str(tmp_path / "bad.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.h5" in err and err.startswith("flowtie-dask import: error:")
    assert main(["export", str(tmp_path / "res.zarr"), "--out", str(tmp_path / "res.h5")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_cli_import_takes_a_microscope_log_and_flags_override_it(sim_store, tmp_path, capsys):
    import json

    assert main(["export", sim_store, "--out", str(tmp_path / "sim")]) == 0
    files = [str(tmp_path / f"sim_defocus_{i}.h5") for i in range(3)]
    log = tmp_path / "microscope.json"
    log.write_text(json.dumps({"high_tension": "300 kV", "convergence_semiangle_mrad": 19,
                               "defocus_nm": [2, 0, -2], "defocus_sign": "positive = overfocus"}))
    store = str(tmp_path / "meta.zarr")
    # the files record 20 mrad (a log's 19 would be refused as inconsistent): the flag overrides the log
    assert main(["import", *files, "--meta", str(log), "--semiangle", "20", "--out", store]) == 0
    m = open_scan_store(store).metadata
    assert m.energy == 300e3 and m.semiangle == 20.0
    assert tuple(m.defocus) == (-20.0, 0.0, 20.0)  # nm, overfocus-positive → Δf in Å, positive = underfocus
    capsys.readouterr()
    log.write_text(json.dumps({"convergence_semiangle_mrad": 20, "defocus_nm": [2, 0, -2],
                               "defocus_sign": "positive = overfocus"}))
    assert main(["import", *files, "--meta", str(log), "--out", str(tmp_path / "none.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no energy" in err and "high_tension_<unit>" in err
    assert not os.path.exists(tmp_path / "none.zarr")
    assert main(["import", *files, "--defocus", "-20", "0", "20", "--semiangle", "20", "--out",
                 str(tmp_path / "none.zarr")]) == 2
    assert "no energy: give --energy or a microscope log with it (--meta FILE)" in capsys.readouterr().err


# ------------------------------------------------------------------------ py4DSTEM files beside camera files
def test_cli_tells_py4dstem_files_from_camera_files(sim_store, tmp_path, capsys):
    import h5py

    from flowtie_dask.interop.frames import frame_format
    from tests.cli.catalogue import assert_refused

    files = export_store(sim_store, tmp_path / "sim")
    assert [frame_format(f) for f in files] == ["py4dstem"] * 3
    opts = ["--defocus", "-20", "0", "20", "--energy", "300000", "--semiangle", "20"]
    line = assert_refused(["import", *files, *opts, "--bin", "2", "--out", tmp_path / "a.zarr"], capsys=capsys,
                          match="--bin apply to camera files", inputs=files, outputs=[tmp_path / "a.zarr"])
    assert "py4DSTEM files carry" in line
    frames = tmp_path / "frames.h5"
    with h5py.File(frames, "w") as f:
        f["entry/data/data"] = np.ones((64, 16, 16), np.uint16)
    assert_refused(["import", files[0], str(frames), files[2], *opts, "--out", tmp_path / "b.zarr"], capsys=capsys,
                   match="give three files of one kind: MINUS is py4dstem, FOCUS is hdf5", inputs=[frames],
                   outputs=[tmp_path / "b.zarr"])
    # naming the DataCube's dataset reads an EMD file as a plain 4D HDF5 dataset, streamed (one dataset name for
    # the three files: the first file three times); the store's first scan is what that dataset holds
    with h5py.File(files[0]) as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) and o.ndim == 4 else None)
    out = tmp_path / "c.zarr"
    assert main(["import", *[files[0]] * 3, *opts, "--dataset", names[0], "--scan-step", "0.7",
                 "--detector-sampling", "0.05", "--out", str(out)]) == 0
    src, got = open_scan_store(sim_store), open_scan_store(out)
    assert got.metadata.provenance["format"] == ["hdf5"] * 3 and got.metadata.scan_step == (0.7, 0.7)
    np.testing.assert_array_equal(got.intensity[2], src.intensity[0])  # float32 patterns, as they were


def test_export_of_a_store_of_counts_writes_normalised_datacubes(tmp_path, rng):
    import h5py

    from flowtie_dask.interop.frames import import_frames

    files = []
    for i in range(3):
        files.append(str(tmp_path / f"f{i}.h5"))
        with h5py.File(files[-1], "w") as f:
            f["entry/data/data"] = rng.poisson(30.0, size=(4, 5, 6, 6)).astype(np.uint16)
    out = import_frames(*files, out=tmp_path / "c.zarr", **OPTICS, scan_step=0.5, detector_sampling=0.1)
    assert open_scan_store(out).intensity.dtype == np.uint16
    cubes = store_to_datacubes(out)
    for i, cube in enumerate(cubes):
        with h5py.File(files[i]) as f:
            raw = f["entry/data/data"][:].astype(np.float64)
        np.testing.assert_allclose(cube.data, raw / raw.sum(axis=(2, 3)).mean(), rtol=1e-6)
        assert cube.data.sum(axis=(2, 3)).mean() == pytest.approx(1.0, rel=1e-5)


def test_counts_store_reads_as_the_py4dstem_import_normalised_it(tmp_path, rng):
    """The same uint16 counts through both imports: py4DSTEM's bakes 1/mean into float32 values, the streaming
    import keeps the counts and records the factor; read_block gives the methods the same numbers."""
    import h5py

    from flowtie_dask.interop.frames import import_frames
    from flowtie_dask.store import read_block

    raw = [rng.poisson(50.0, size=(5, 4, 8, 8)).astype(np.uint16) for _ in range(3)]
    baked = datacubes_to_store([make_cube(r) for r in raw], **OPTICS, out=tmp_path / "baked.zarr")
    files = []
    for i, r in enumerate(raw):
        files.append(str(tmp_path / f"f{i}.h5"))
        with h5py.File(files[-1], "w") as f:
            f["entry/data/data"] = r.reshape(20, 8, 8)
    counts = import_frames(*files, out=tmp_path / "counts.zarr", **OPTICS, scan_shape=(5, 4), scan_step=0.5,
                           detector_sampling=0.1)
    assert open_scan_store(counts).intensity.dtype == np.uint16
    assert open_scan_store(baked).intensity.dtype == np.float32
    for rows, cols in ((range(5), range(4)), ([4, 0, 1], [3, 0])):  # slices and wrapped index lists
        np.testing.assert_allclose(read_block(counts, rows, cols), read_block(baked, rows, cols), rtol=2e-7)
    assert (open_scan_store(counts).metadata.provenance["intensity_scale"]
            == pytest.approx(open_scan_store(baked).metadata.provenance["intensity_scale"], rel=1e-12))

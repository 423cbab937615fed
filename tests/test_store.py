import json
import os

import numpy as np
import pytest
import zarr

from flowtie_dask.store import (
    SCHEMA_VERSION,
    ScanMetadata,
    ScanStoreError,
    default_chunks,
    open_scan_store,
    write_scan_store,
    write_truth,
)

META = ScanMetadata(energy=300e3, semiangle=20.0, defocus=(-20, 0, 20), scan_step=0.2, detector_sampling=0.08,
                    detector_center=(4, 4), periodic=True, aberrations={"C30": 1e4})


def _write(path, meta=META, scan=(6, 5), det=(8, 8), truth=True, **kw):
    with write_scan_store(path, meta, scan_shape=scan, detector_shape=det, chunks=(4, 4), **kw) as g:
        g["intensity"][:] = np.arange(np.prod(g["intensity"].shape), dtype=np.float32).reshape(g["intensity"].shape)
        if truth:
            write_truth(g, np.ones((16, 16)), pixel_size=(0.1, 0.1), probe_frame_chunks=(4, 4))
    return path


def test_round_trip(tmp_path):
    path = _write(str(tmp_path / "a.zarr"))
    s = open_scan_store(path)
    assert s.metadata == META
    assert s.scan_shape == (6, 5) and s.detector_shape == (8, 8)
    assert s.intensity.chunks == (1, 4, 4, 8, 8)
    assert s.intensity[2, 5, 4, 7, 7] == np.prod(s.intensity.shape) - 1
    assert s.to_dask().chunks[1] == (4, 2)
    assert s.truth["projected_phase"].attrs["pixel_size_A"] == [0.1, 0.1]
    assert s.truth["probe_frame_phase"].shape == (6, 5, 8, 8)
    text = s.describe()
    assert "(3, 6, 5, 8, 8)" in text and "Δf = -20, 0, 20 Å" in text and "probe_frame_phase" in text


def test_default_chunks_target_size():
    for det in [(32, 32), (64, 64), (128, 128), (256, 256)]:
        cx, cy = default_chunks((512, 512), det)
        size = cx * cy * det[0] * det[1] * 4
        assert cx == cy and 2 * 2**20 <= size <= 8 * 2**20
    assert default_chunks((3, 100), (8, 8)) == (3, 100)  # never larger than the scan


def test_existing_output_is_kept_without_overwrite(tmp_path):
    path = _write(str(tmp_path / "a.zarr"))
    with pytest.raises(ScanStoreError, match="already exists; choose another --out or pass --overwrite"):
        _write(path)
    _write(path, overwrite=True)
    assert open_scan_store(path).intensity.shape[1:3] == (6, 5)


def test_a_failed_write_leaves_no_store_and_keeps_the_old_one(tmp_path):
    path = _write(str(tmp_path / "a.zarr"))
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(KeyError):
        with write_scan_store(path, META, scan_shape=(2, 2), detector_shape=(8, 8), overwrite=True):
            raise KeyError("boom")
    assert sorted(os.listdir(tmp_path)) == before
    assert open_scan_store(path).scan_shape == (6, 5)


def _edit_attrs(path, **changes):
    g = zarr.open_group(path, mode="r+")
    for k, v in changes.items():
        if v is None:
            del g.attrs[k]
        else:
            g.attrs[k] = v


@pytest.mark.parametrize(
    "edit,message",
    [
        (dict(schema=None), "not a flowtie-dask scan store"),
        (dict(schema_version=SCHEMA_VERSION + 1), "upgrade flowtie-dask"),
        (dict(complete=False), "incomplete"),
        (dict(energy_eV=None), "'energy_eV' is missing"),
        (dict(energy_eV=-3.0), "energy must be a positive"),
        (dict(semiangle_mrad=0), "semiangle must be a positive"),
        (dict(defocus_A=[0, 0, 20]), "three distinct values"),
        (dict(defocus_A=[10, 20]), "three distinct values"),
        (dict(defocus_convention="defocus = C10"), "convert the defocus values"),
        (dict(scan_step_A=[0.2, -0.2]), "scan_step must be positive"),
        (dict(detector_sampling_invA="x"), "detector_sampling must be one or two numbers"),
        (dict(detector_center_px=[40, 4]), "lies outside"),
        (dict(aberrations_A={"C23": 1.0}), "unknown aberrations"),
    ],
)
def test_every_attribute_error_is_one_line(tmp_path, edit, message):
    path = _write(str(tmp_path / "a.zarr"))
    _edit_attrs(path, **edit)
    with pytest.raises(ScanStoreError, match=message) as err:
        open_scan_store(path)
    assert "\n" not in str(err.value)


def test_structural_errors(tmp_path):
    with pytest.raises(ScanStoreError, match="does not exist"):
        open_scan_store(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x.txt").write_text("hi")
    with pytest.raises(ScanStoreError, match="not a Zarr group"):
        open_scan_store(tmp_path / "plain")
    # wrong intensity shape
    bad = zarr.open_group(str(tmp_path / "b.zarr"), mode="w")
    bad.attrs.update({**META.to_attrs(), "complete": True})
    with pytest.raises(ScanStoreError, match="no 'intensity' array"):
        open_scan_store(tmp_path / "b.zarr")
    bad.create_array("intensity", shape=(2, 4, 4, 8, 8), dtype="float32")
    with pytest.raises(ScanStoreError, match=r"shape \(3, Rx, Ry, Qx, Qy\)"):
        open_scan_store(tmp_path / "b.zarr")
    c = zarr.open_group(str(tmp_path / "c.zarr"), mode="w")
    c.attrs.update({**META.to_attrs(), "complete": True})
    c.create_array("intensity", shape=(3, 4, 4, 8, 8), dtype="complex64")
    with pytest.raises(ScanStoreError, match="neither float nor unsigned"):
        open_scan_store(tmp_path / "c.zarr")


def test_truth_errors(tmp_path):
    path = _write(str(tmp_path / "a.zarr"))
    g = zarr.open_group(path, mode="r+")
    del g["truth"]["projected_phase"].attrs["pixel_size_A"]
    with pytest.raises(ScanStoreError, match="pixel_size_A"):
        open_scan_store(path)
    path = _write(str(tmp_path / "b.zarr"), truth=False)
    g = zarr.open_group(path, mode="r+")
    t = g.create_group("truth")
    with pytest.raises(ScanStoreError, match="no 'projected_phase'"):
        open_scan_store(path)
    t.create_array("projected_phase", data=np.zeros((4, 4), np.float32)).attrs.update(
        {"pixel_size_A": [0.1, 0.1], "origin_A": [0, 0]})
    t.create_array("probe_frame_phase", shape=(6, 5, 8, 7), dtype="float32")
    with pytest.raises(ScanStoreError, match="does not match the scan"):
        open_scan_store(path)


def test_write_rejects_bad_requests(tmp_path):
    with pytest.raises(ScanStoreError, match="folder .* does not exist"):
        _write(str(tmp_path / "nope" / "a.zarr"))
    with pytest.raises(ScanStoreError, match="dtype must be float32 or uint16"):
        _write(str(tmp_path / "a.zarr"), dtype="float64")
    assert not (tmp_path / "a.zarr").exists()


def test_attributes_are_plain_json_with_units(tmp_path):
    path = _write(str(tmp_path / "a.zarr"))
    attrs = json.load(open(os.path.join(path, "zarr.json")))["attributes"]
    assert attrs["defocus_convention"].startswith("defocus = -C10")
    assert attrs["c10_A"] == [20.0, -0.0, -20.0]
    assert attrs["units"]["detector_sampling"] == "1/Å"
    assert attrs["complete"] is True


def test_electrons_per_pattern_of_a_float_store_is_its_recorded_shot_noise(tmp_path):
    """A normalised (float) store has no counts to measure: a simulation with shot noise records its electrons
    per pattern, a noise-free one (or an unknown source) gives 0; the runner hands the figure to the methods."""
    import dataclasses

    from flowtie_dask.store import electrons_per_pattern

    clean = open_scan_store(_write(tmp_path / "clean.zarr"))
    assert electrons_per_pattern(clean) == 0.0
    noisy = dataclasses.replace(META, provenance={"electrons_per_pattern": 2.5e4})
    assert electrons_per_pattern(open_scan_store(_write(tmp_path / "noisy.zarr", meta=noisy))) == 2.5e4
    for i, bad in enumerate(("n/a", None, -3.0, float("nan"))):
        odd = dataclasses.replace(META, provenance={"electrons_per_pattern": bad})
        assert electrons_per_pattern(open_scan_store(_write(tmp_path / f"odd{i}.zarr", meta=odd))) == 0.0
    # the runner hands it to the method with the geometry (checked before anything is read)
    from flowtie_dask.methods import get_method
    from flowtie_dask.runner import reconstruct

    class Seen(Exception):
        pass

    method = get_method("tie")

    def check(geometry):
        raise Seen(geometry.electrons_per_pattern)

    method.check = check
    with pytest.raises(Seen) as seen:
        reconstruct(str(tmp_path / "noisy.zarr"), method)
    assert seen.value.args == (2.5e4,)

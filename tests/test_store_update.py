"""update_scan_metadata: a store's metadata changed in place, atomically, under a lock, nothing else touched."""

import json
import os
import threading
import time

import numpy as np
import pytest

from flowtie_dask import atomic
from flowtie_dask.store import ScanMetadata, ScanStoreError, StoreHandle, open_scan_store, read_block
from flowtie_dask.store import update as update_module
from flowtie_dask.store import update_scan_metadata, write_scan_store


def _meta(**kw):
    base = dict(energy=300e3, semiangle=20.0, defocus=(-20.0, 0.0, 20.0), scan_step=(0.2, 0.2),
                detector_sampling=(0.1, 0.1), detector_center=(8, 8))
    return ScanMetadata(**{**base, **kw})


@pytest.fixture
def store(tmp_path):
    path = str(tmp_path / "s.zarr")
    data = np.random.default_rng(0).random((3, 4, 4, 16, 16)).astype(np.float32)
    with write_scan_store(path, _meta(), scan_shape=(4, 4), detector_shape=(16, 16)) as g:
        g["intensity"][...] = data
    return path, data


def _doc(path):
    with open(os.path.join(path, "zarr.json"), "rb") as f:
        return f.read()


def test_fields_change_and_everything_else_stays(store):
    path, data = store
    before = json.loads(_doc(path))["attributes"]
    handle = StoreHandle(path)
    assert handle.metadata().detector_center == (8.0, 8.0)
    meta = update_scan_metadata(path, detector_center=(7.25, 8.5), detector_rotation=31.0,
                                scan_drift=((0.1, -0.2), (0, 0), (0.3, 0.4)), calibration={"x": {"value": 1}})
    after = json.loads(_doc(path))["attributes"]
    assert open_scan_store(path).metadata == meta
    assert after["detector_center_px"] == [7.25, 8.5] and after["detector_rotation_deg"] == 31.0
    assert after["scan_drift_A"] == [[0.1, -0.2], [0.0, 0.0], [0.3, 0.4]]
    for key in ("complete", "store_uuid", "provenance", "energy_eV", "schema_version"):
        assert after[key] == before[key], key
    assert handle.metadata().detector_center == (7.25, 8.5)  # the handle's cache follows the file
    np.testing.assert_array_equal(read_block(path, slice(None), slice(None)), data)  # intensity untouched
    for folder in (path, os.path.dirname(path)):  # no lock or temporary file left
        assert not [n for n in os.listdir(folder) if n.startswith(".")], os.listdir(folder)


def test_a_refused_or_failed_update_leaves_the_store_as_it_was(store, monkeypatch):
    path, _ = store
    doc = _doc(path)
    for kw, words in [({"detector_centre": (1, 1)}, "unknown scan metadata field"),
                      ({"scan_drift": ((np.nan, 0), (0, 0), (0, 0))}, "finite"),
                      ({"energy": -1.0}, "energy"),
                      ({"calibration": {"x": object()}}, "not JSON")]:
        with pytest.raises(ScanStoreError, match=words) as info:
            update_scan_metadata(path, **kw)
        assert "\n" not in str(info.value)
        assert _doc(path) == doc

    def crash(target, data):  # the disk fills while the new attributes are written aside
        with open(target + ".tmp-crash", "wb") as f:
            f.write(data[: len(data) // 2])
        os.remove(target + ".tmp-crash")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(update_module, "write_file_atomic", crash)
    with pytest.raises(OSError):
        update_scan_metadata(path, detector_rotation=10.0)
    assert _doc(path) == doc
    assert open_scan_store(path).metadata.detector_rotation == 0.0
    with pytest.raises(ScanStoreError, match="does not exist"):
        update_scan_metadata(path + "-missing", detector_rotation=1.0)


def test_the_write_is_a_rename_of_a_complete_file(store, monkeypatch):
    """Readers see the old attributes or the new: the file is written aside and os.replace'd."""
    path, _ = store
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append((src, dst, json.loads(open(src, "rb").read())["attributes"]["detector_rotation_deg"]))
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", spy)
    update_scan_metadata(path, detector_rotation=12.5)
    assert len(seen) == 1 and seen[0][1] == os.path.join(path, "zarr.json") and seen[0][2] == 12.5


def test_concurrent_updates_that_read_the_record_lose_nothing(store):
    """Each change reads the calibration record under the lock: eight concurrent additions all survive."""
    path, _ = store

    def add(key):
        def change(current):
            record = dict(current.calibration)
            time.sleep(0.02)  # widen the window a lost update would need
            record[key] = {"value": key}
            return {"calibration": record}
        update_scan_metadata(path, change)

    threads = [threading.Thread(target=add, args=(f"q{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(open_scan_store(path).metadata.calibration) == {f"q{i}" for i in range(8)}

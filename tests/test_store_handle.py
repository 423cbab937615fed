"""StoreHandle: what the runner's tasks carry — picklable, reads the same blocks, knows the scan's geometry."""

import os
import pickle

import numpy as np

from flowtie_dask.cli.main import main
from flowtie_dask.geometry import ReconstructionGeometry
from flowtie_dask.store import StoreHandle, open_scan_store

SMALL = ["--lateral-cells", "1", "--scan-pixels", "8", "--detector-pixels", "16", "--gpts", "24", "--no-progress",
         "--workers", "0"]


def test_handle_pickles_reads_and_knows_the_geometry(tmp_path):
    path = str(tmp_path / "g.zarr")
    assert main(["simulate", "GaAs", "--out", path, *SMALL]) == 0
    h = pickle.loads(pickle.dumps(StoreHandle(path)))
    assert os.fspath(h) == path
    st = open_scan_store(path)
    rows, cols = [6, 7, 0, 1], [2, 3, 4]  # wrapped rows, as a periodic halo reads them
    want = np.asarray(st.intensity[:], dtype=np.float32)[:, rows][:, :, cols]
    np.testing.assert_array_equal(h.read_block(rows, cols), want)
    np.testing.assert_array_equal(h.read_block(rows, cols, defocus=[1]), want[1:2])
    geo = ReconstructionGeometry.from_metadata(st.metadata, scan_shape=st.scan_shape, detector_shape=st.detector_shape)
    assert h.geometry() == geo
    # rewritten at the same path with other optics: the handle follows
    assert main(["simulate", "GaAs", "--out", path, "--energy", "200000", "--overwrite", *SMALL]) == 0
    assert h.metadata().energy == 200000 and h.geometry().energy == 200000

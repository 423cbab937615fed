"""The scratch array of raw chunk files against the plain NumPy array it holds, over several chunkings."""

import os

import numpy as np
import pytest

from flowtie_dask.runner.chunkfiles import ChunkFiles


@pytest.mark.parametrize("chunks", [(1, 4, 4, 2, 6), (2, 3, 5, 4, 6), (2, 7, 7, 5, 6), (1, 1, 1, 1, 1)])
def test_reads_of_any_region_equal_numpy(tmp_path, chunks):
    rng = np.random.default_rng(1)
    want = rng.normal(size=(2, 7, 7, 5, 6)).astype(np.float32)
    a = ChunkFiles.create(str(tmp_path / "a"), want.shape, chunks)
    c = a.chunks
    for i in range(0, 2, c[0]):  # written in whole chunks, in any order, edge chunks short
        for j in reversed(range(0, 7, c[1])):
            a[i:i + c[0], j:j + c[1]] = want[i:i + c[0], j:j + c[1]]
    again = ChunkFiles(str(tmp_path / "a"))
    assert again.shape == want.shape and again.dtype == np.float32 and again.nbytes == want.nbytes
    keys = [(slice(None),), (1, slice(2, 6), slice(None), slice(1, 4)), (slice(None), 3, -1),
            (0, slice(0, 7), slice(5, 7), 4, slice(2, 3)), (slice(None), slice(None), slice(None), slice(3, 5)),
            (slice(1, 1),)]
    for key in keys:
        got = again[key]
        assert got.shape == want[key].shape and np.array_equal(got, want[key]), key
    assert not [n for n in os.listdir(tmp_path / "a") if n.endswith(".tmp")]


def test_writes_must_be_whole_chunks_and_reads_must_follow_them(tmp_path):
    a = ChunkFiles.create(str(tmp_path / "a"), (8, 6), (4, 3), dtype="float64")
    with pytest.raises(ValueError, match="axis 0: rows 2–6 are not whole chunks of 4"):
        a[2:6] = np.zeros((4, 6))
    with pytest.raises(ValueError, match="value of shape"):
        a[0:4] = np.zeros((4, 5))
    with pytest.raises(IndexError, match="step-1"):
        a[::2]
    a[4:8, 3:6] = np.ones((4, 3))
    assert np.array_equal(a[5:7, 4:6], np.ones((2, 2)))
    with pytest.raises(RuntimeError, match="was never written"):
        a[0:5, 3:6]  # reaches the unwritten chunk (0, 1)
    with pytest.raises(FileExistsError):
        ChunkFiles.create(str(tmp_path / "a"), (8, 6), (4, 3))
    with pytest.raises(ValueError, match="one size ≥ 1 per axis"):
        ChunkFiles.create(str(tmp_path / "b"), (8, 6), (4,))

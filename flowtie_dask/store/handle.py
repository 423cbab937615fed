"""A picklable handle on a scan store, for Dask tasks: a path that reads checked-for-integrity blocks and
knows the scan's geometry, with no open Zarr objects inside (so it travels to any worker)."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from ..geometry import ReconstructionGeometry
from .integrity import read_block
from .metadata import ScanMetadata

__all__ = ["StoreHandle"]


@dataclass(frozen=True)
class StoreHandle:
    """A scan store by ``path``, the folder of the store (``os.fspath(handle)`` is the path, so the handle serves
    wherever a path does)."""

    path: str

    def __fspath__(self) -> str:
        return self.path

    def read_block(self, rows, cols, *, defocus=None) -> np.ndarray:
        """``intensity[defocus, rows, cols]`` as float32, shape (D, len(rows), len(cols), Qx, Qy); a missing or
        corrupt chunk is named (:func:`flowtie_dask.store.read_block`)."""
        return read_block(self.path, rows, cols, defocus=defocus)

    def metadata(self) -> ScanMetadata:
        """The store's :class:`ScanMetadata` (read once per process)."""
        return _metadata(self.path, _stamp(self.path))

    def geometry(self):
        """The :class:`~flowtie_dask.geometry.ReconstructionGeometry` of the whole scan."""
        shape = _shape(self.path, _stamp(self.path))
        return ReconstructionGeometry.from_metadata(self.metadata(), scan_shape=shape[1:3], detector_shape=shape[3:5])


def _stamp(path: str) -> tuple:
    """Changes when the store is rewritten at the same path (the caches below follow it)."""
    st = os.stat(os.path.join(path, "zarr.json"))
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=16)
def _metadata(path: str, stamp: tuple) -> ScanMetadata:
    import zarr

    return ScanMetadata.from_attrs(dict(zarr.open_group(path, mode="r").attrs))


@functools.lru_cache(maxsize=16)
def _shape(path: str, stamp: tuple) -> tuple:
    import zarr

    return tuple(zarr.open_array(os.path.join(path, "intensity"), mode="r").shape)

"""The reader abstraction of the streaming import: :class:`FrameSource`, a camera file seen as (Rx, Ry, Qx, Qy)
patterns that are read one block of scan positions at a time.

A source is opened from its path and a few parameters (``params``) and never holds array data itself: pickling
it keeps only the path and the parameters, and unpickling (or :meth:`FrameSource.reopen`) opens the file again, so
each Dask task opens its own handle (h5py handles cannot be pickled or shared safely between processes).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["FrameSource", "frames_to_scan", "first_line", "check_values_dtype", "jsonable"]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _span(index, n: int, what: str) -> slice:
    """A step-1 slice within [0, n) for ``index`` (a slice or a range)."""
    if isinstance(index, range):
        index = slice(index.start, index.stop, index.step)
    if not isinstance(index, slice):
        raise TypeError(f"{what} must be a slice of scan positions, got {type(index).__name__}")
    start, stop, step = index.indices(n)
    if step != 1:
        raise ValueError(f"{what} must be a contiguous range (step 1), got {index}")
    return slice(start, max(start, stop))


def frames_to_scan(path: str, n_frames: int, scan_shape, *, what: str = "frames") -> tuple[int, int]:
    """The scan shape (Rx, Ry) of a stack of ``n_frames`` frames in row-major scan order, checked.

    Raises
    ------
    ValueError
        No scan shape given, or Rx·Ry ≠ the number of frames (one line naming the file).
    """
    if scan_shape is None:
        raise ValueError(f"{path}: the {what} are a stack of {n_frames} frames; give the scan shape with "
                         "--scan-shape RX RY (or scan_shape in the microscope log)")
    rx, ry = (int(v) for v in scan_shape)
    if rx < 1 or ry < 1:
        raise ValueError(f"{path}: scan shape {rx}×{ry} must be positive")
    if rx * ry != n_frames:
        raise ValueError(f"{path}: the {what} hold {n_frames} frames but the scan shape {rx}×{ry} needs "
                         f"{rx * ry}; give the scan shape the file was recorded with (--scan-shape RX RY)")
    return rx, ry


def _rebuild(cls, path, params):
    return cls(path, **params)


class FrameSource:
    """A camera file as patterns (Rx, Ry, Qx, Qy), read by block.

    Subclasses open the file in ``__init__(path, **params)`` (raising a one-line ``ValueError`` naming the file
    and what to do), set :attr:`shape` and :attr:`dtype`, and implement :meth:`_read`.

    Attributes
    ----------
    path : str
    params : dict
        What opens the file again (``type(source)(path, **params)``).
    format : str
        ``hdf5``, ``npy``, ``raw`` or ``rosettasciio:<reader>``.
    shape : (Rx, Ry, Qx, Qy)
    dtype : numpy.dtype
        Of the values in the file (native byte order).
    dataset : str or None
        The HDF5 dataset or the reader's signal read.
    calibration : dict
        What the file itself records, in the store's units: ``scan_step`` (Å, two values), ``detector_sampling``
        (1/Å) or ``detector_angle`` (mrad per pixel); empty when it records nothing usable.
    details : dict
        JSON-serialisable facts for the store's provenance (layout, compression …).
    """

    format = "?"

    def __init__(self, path: str, **params):
        self.path = os.fspath(path)
        self.params = dict(params)
        self.shape: tuple[int, int, int, int] = (0, 0, 0, 0)
        self.dtype = np.dtype("uint8")
        self.dataset: str | None = None
        self.calibration: dict = {}
        self.details: dict = {}

    # -------------------------------------------------------------------------------------- the interface
    def read(self, rows, cols) -> np.ndarray:
        """Patterns at scan positions ``rows`` × ``cols`` (slices), shape (len(rows), len(cols), Qx, Qy), in the
        file's dtype (a new array, never a view of the file)."""
        rows = _span(rows, self.shape[0], "rows")
        cols = _span(cols, self.shape[1], "cols")
        out = self._read(rows, cols)
        want = (rows.stop - rows.start, cols.stop - cols.start) + tuple(self.shape[2:])
        if tuple(out.shape) != want:  # pragma: no cover - a reader's bug, not the user's
            raise RuntimeError(f"{self.path}: read {tuple(out.shape)} for a block of {want}")
        return out

    def _read(self, rows: slice, cols: slice) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release the file (the source can be reopened with :meth:`reopen`)."""

    def reopen(self, **changes) -> "FrameSource":
        """A new source on the same file (a fresh handle), with some parameters changed."""
        return type(self)(self.path, **{**self.params, **changes})

    @property
    def nbytes(self) -> int:
        """Bytes of the patterns once read (uncompressed)."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def describe(self) -> str:
        what = f" {self.dataset}" if self.dataset else ""
        return f"{os.path.basename(self.path)}{what} ({self.format}, {self.shape} {self.dtype})"

    # ------------------------------------------------------------------------------------ the protocols
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __reduce__(self):
        return _rebuild, (type(self), self.path, self.params)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


def check_values_dtype(path: str, dtype: Any, what: str = "the frames") -> np.dtype:
    """The dtype of intensities (unsigned/signed integers, floats, bool), native byte order; else a one-line error."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "uifb" or dtype.fields is not None:
        raise ValueError(f"{path}: {what} have dtype {dtype}; intensities must be real numbers (integers or floats)")
    return dtype.newbyteorder("=")


def jsonable(value):
    """``value`` with NumPy scalars as Python numbers and anything else not JSON as its text (for provenance)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)

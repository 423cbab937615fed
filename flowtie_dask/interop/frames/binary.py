"""NumPy ``.npy`` files (memory-mapped) and raw binary files (a dtype, a shape and a header offset) as frames.

Either holds frames (N, Qx, Qy) in row-major scan order (with a scan shape) or patterns (Rx, Ry, Qx, Qy). Nothing
is read until a block is asked for; each block is copied out of the memory map.
"""

from __future__ import annotations

import os

import numpy as np

from .base import FrameSource, check_values_dtype, first_line, frames_to_scan

__all__ = ["NpyFrames", "RawFrames"]


def _as_scan(path, mm, scan_shape, what):
    """(the map as (Rx, Ry, Qx, Qy), its layout) for a 3D frame stack or a 4D array; one-line errors otherwise."""
    if mm.ndim == 3:
        rx, ry = frames_to_scan(path, mm.shape[0], scan_shape, what=what)
        return mm.reshape((rx, ry) + mm.shape[1:]), "frames, row-major scan order"
    if mm.ndim == 4:
        if scan_shape is not None and tuple(int(v) for v in scan_shape) != tuple(mm.shape[:2]):
            raise ValueError(f"{path}: the {what} have a {mm.shape[0]}×{mm.shape[1]} scan but the scan shape given is "
                             f"{scan_shape[0]}×{scan_shape[1]}"
                             " (--scan-shape, or the log's scan_shape); give the file's")
        return mm, "4D (Rx, Ry, Qx, Qy)"
    raise ValueError(f"{path}: the {what} have shape {tuple(mm.shape)}; give frames (N, Qx, Qy) or patterns "
                     "(Rx, Ry, Qx, Qy)")


class _Mapped(FrameSource):
    _mm = None

    def _adopt(self, mm, scan_shape, what):
        mm, layout = _as_scan(self.path, mm, scan_shape, what)
        if min(mm.shape) < 1:
            raise ValueError(f"{self.path}: the {what} are empty, shape {tuple(mm.shape)}")
        self._mm = mm
        self.shape = tuple(int(v) for v in mm.shape)
        self.details["layout"] = layout

    def _read(self, rows: slice, cols: slice) -> np.ndarray:
        if self._mm is None:
            raise ValueError(f"{self.path}: the file was closed; reopen the source")
        try:
            return np.array(self._mm[rows, cols], dtype=self.dtype)
        except OSError as exc:  # pragma: no cover - a file truncated while being read
            raise ValueError(f"{self.path}: cannot read scan rows {rows.start}–{rows.stop - 1} ({first_line(exc)}); "
                             "the file may be truncated: copy it again") from None

    def close(self) -> None:
        self._mm = None


class NpyFrames(_Mapped):
    """A ``.npy`` file, memory-mapped: frames (N, Qx, Qy) with ``scan_shape``, or (Rx, Ry, Qx, Qy)."""

    format = "npy"

    def __init__(self, path: str, *, scan_shape=None, **hints):
        super().__init__(path, scan_shape=scan_shape, **hints)
        try:
            mm = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"{self.path}: not a readable NumPy .npy file ({first_line(exc)}); save the frames with "
                             "numpy.save, or give --dtype/--shape for a raw binary file") from None
        if not isinstance(mm, np.ndarray):
            raise ValueError(f"{self.path}: holds {type(mm).__name__}, not one array; save the frames with numpy.save")
        self.dtype = check_values_dtype(self.path, mm.dtype)
        self._adopt(mm, scan_shape, "frames")
        self.details.update({"npy_shape": [int(v) for v in mm.shape], "npy_dtype": str(mm.dtype),
                             "fortran_order": bool(mm.flags.f_contiguous and not mm.flags.c_contiguous)})


class RawFrames(_Mapped):
    """A raw binary file: ``offset`` header bytes, then values of ``dtype`` in C order of ``shape``.

    Parameters
    ----------
    dtype : str
        NumPy dtype with byte order where it matters, e.g. ``uint16`` (native), ``<u2``, ``>u4``, ``float32``.
    shape : sequence of int
        (N, Qx, Qy) frames (with ``scan_shape``), (Rx, Ry, Qx, Qy), or (Qx, Qy): frames of that size, as many as
        the file holds.
    offset : int
        Bytes before the first value.
    """

    format = "raw"

    def __init__(self, path: str, *, dtype=None, shape=None, offset: int = 0, scan_shape=None, **hints):
        super().__init__(path, dtype=dtype, shape=shape, offset=offset, scan_shape=scan_shape, **hints)
        if dtype is None or shape is None:
            raise ValueError(f"{self.path}: a raw binary file needs --dtype (e.g. uint16) and --shape (N QX QY, "
                             "RX RY QX QY or QX QY)")
        try:
            raw_dtype = np.dtype(dtype)
        except TypeError:
            raise ValueError(f"{self.path}: --dtype {dtype!r} is not a NumPy dtype (e.g. uint16, <u2, >u4, "
                             "float32)") from None
        self.dtype = check_values_dtype(self.path, raw_dtype)
        try:
            dims = tuple(int(v) for v in shape)
            offset = int(offset)
        except (TypeError, ValueError):
            raise ValueError(f"{self.path}: --shape {shape!r} and --offset {offset!r} must be whole numbers") from None
        if len(dims) not in (2, 3, 4) or min(dims) < 1 or offset < 0:
            raise ValueError(f"{self.path}: --shape must be 2, 3 or 4 positive numbers (QX QY, N QX QY or RX RY QX QY) "
                             f"and --offset ≥ 0, got {list(dims)} and {offset}")
        size = os.path.getsize(self.path)
        frame = dims[-2] * dims[-1] * raw_dtype.itemsize
        if len(dims) == 2:
            if (size - offset) <= 0 or (size - offset) % frame:
                raise ValueError(f"{self.path}: {size} bytes after a {offset}-byte header are not a whole number of "
                                 f"{dims[0]}×{dims[1]} {raw_dtype} frames ({frame} bytes each); check --shape, "
                                 "--dtype and --offset")
            dims = ((size - offset) // frame,) + dims
        want = offset + int(np.prod(dims, dtype=np.int64)) * raw_dtype.itemsize
        if size != want:
            raise ValueError(f"{self.path}: the file has {size} bytes but a {offset}-byte header and "
                             f"{'×'.join(map(str, dims))} {raw_dtype} values need {want}; check --shape, --dtype "
                             "and --offset")
        mm = np.memmap(self.path, dtype=raw_dtype, mode="r", offset=offset, shape=dims)
        self._adopt(mm, scan_shape, "frames")
        self.details.update({"raw_dtype": raw_dtype.str, "raw_shape": list(dims), "raw_offset": offset})

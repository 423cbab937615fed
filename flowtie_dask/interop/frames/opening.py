"""Telling camera formats apart (:func:`frame_format`) and opening one as a :class:`~.base.FrameSource`
(:func:`open_frames`)."""

from __future__ import annotations

import os

from .base import FrameSource
from .binary import NpyFrames, RawFrames
from .hdf5 import HDF5Frames, is_py4dstem_file
from .rosetta import RSCIIO_READERS, RsciioFrames

__all__ = ["open_frames", "frame_format", "HDF5_EXTENSIONS"]

HDF5_EXTENSIONS = (".h5", ".hdf5", ".hdf", ".nxs", ".py4dstem")
_RAW_EXTENSIONS = (".raw", ".bin", ".dat")


def frame_format(path, *, dataset=None, dtype=None, shape=None) -> str:
    """Which reader takes ``path``: ``py4dstem``, ``hdf5``, ``npy``, ``raw`` or ``rosettasciio``.

    A raw binary file is one given a ``dtype`` or ``shape`` (any extension but ``.npy`` and HDF5). An HDF5 file (or
    ``.emd``) written by py4DSTEM/emdfile is ``py4dstem`` unless a ``dataset`` is named; a ``.emd`` that is not one
    (Velox) is read through RosettaSciIO.

    Raises
    ------
    ValueError
        The file does not exist, or its kind cannot be told (one line naming it and what to give).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"file {path!r} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if os.path.isdir(path) and ext != ".zspy":
        raise ValueError(f"{path!r} is a folder, not a camera file")
    if ext == ".npy":
        return "npy"
    if ext in HDF5_EXTENSIONS or ext == ".emd":
        if ext == ".py4dstem" or (dataset is None and is_py4dstem_file(path)):
            return "py4dstem"
        if ext == ".emd" and dataset is None:
            return "rosettasciio"
        return "hdf5"
    if dtype is not None or shape is not None:
        return "raw"
    if ext.lstrip(".") in RSCIIO_READERS:
        return "rosettasciio"
    if ext in _RAW_EXTENSIONS:
        raise ValueError(f"{path}: a raw binary file needs --dtype (e.g. uint16) and --shape (N QX QY, RX RY QX QY "
                         "or QX QY), and --offset for a header")
    raise ValueError(f"{path}: unknown format {ext or '(no extension)'}; readable: HDF5 (.h5 .hdf5 .nxs), .npy, "
                     + ", ".join(f".{e}" for e in sorted(RSCIIO_READERS)) + ", py4DSTEM/EMD, or raw binary with "
                     "--dtype/--shape")


def open_frames(path, *, dataset=None, scan_shape=None, dtype=None, shape=None, offset: int = 0,
                block=None) -> FrameSource:
    """Open a camera file as patterns (Rx, Ry, Qx, Qy) read by block (no data is read here).

    Parameters
    ----------
    path : str or PathLike
    dataset : str, optional
        HDF5 dataset (default ``entry/data/data`` or the file's only 3D/4D dataset), or the signal of a
        RosettaSciIO file holding several (index or title).
    scan_shape : (Rx, Ry), optional
        For frame stacks (N = Rx·Ry frames, row-major scan order); checked against 4D data.
    dtype, shape, offset
        Of a raw binary file (see :class:`RawFrames`).
    block : (cx, cy), optional
        The block of scan positions reads will ask for (RosettaSciIO readers chunk by it).

    Returns
    -------
    FrameSource

    Raises
    ------
    ValueError
        One line naming the file and what to do: missing, unknown format, not readable, a frame count that does
        not match the scan shape, a py4DSTEM file (read those with :func:`flowtie_dask.interop.import_files`).
    """
    path = os.fspath(path)
    kind = frame_format(path, dataset=dataset, dtype=dtype, shape=shape)
    if kind == "py4dstem":
        raise ValueError(f"{path}: a py4DSTEM/EMD file; import it with flowtie_dask.interop.import_files (the "
                         "'import' command does), or name the frames' dataset with --dataset")
    if kind == "hdf5":
        return HDF5Frames(path, dataset=dataset, scan_shape=scan_shape)
    if kind == "npy":
        return NpyFrames(path, scan_shape=scan_shape)
    if kind == "raw":
        return RawFrames(path, dtype=dtype, shape=shape, offset=offset, scan_shape=scan_shape)
    return RsciioFrames(path, dataset=dataset, scan_shape=scan_shape, block=block)


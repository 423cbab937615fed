"""Camera files streamed into scan stores: one reader abstraction for every format, and the parallel writer.

:func:`open_frames` opens a file as a :class:`~.base.FrameSource`: ``.shape`` (Rx, Ry, Qx, Qy), ``.dtype``,
``read(rows, cols)`` → the patterns of one block of scan positions, ``close()`` / a context manager; it pickles as its
path and parameters, so each Dask task opens its own handle. Formats (:func:`frame_format` tells them apart):

* ``hdf5`` — HDF5 frame stacks as counting cameras write them (``--dataset entry/data/data``, frames (N, Qx, Qy) in
  row-major scan order with a scan shape, or 4D (Rx, Ry, Qx, Qy)), compressed with bitshuffle-LZ4, LZ4, Blosc …
  (:mod:`.hdf5`);
* ``npy`` (memory-mapped) and ``raw`` binary (``dtype``, ``shape``, ``offset``) (:mod:`.binary`);
* ``rosettasciio`` — Merlin ``.mib``, EMPAD ``.xml``, Gatan ``.dm3/.dm4`` and the other formats RosettaSciIO reads
  lazily (:mod:`.rosetta`);
* ``py4dstem`` — py4DSTEM/EMD 1.0 files, which :func:`flowtie_dask.interop.import_files` reads as before.

:func:`import_frames` (:mod:`.writer`) writes three of them (a defocus series) as a scan store block by block on Dask
threads, never holding a whole scan.
"""

from __future__ import annotations

from .base import FrameSource
from .binary import NpyFrames, RawFrames
from .hdf5 import HDF5Frames
from .opening import HDF5_EXTENSIONS, frame_format, open_frames
from .rosetta import RSCIIO_READERS, RsciioFrames
from .writer import import_frames

__all__ = ["open_frames", "frame_format", "import_frames", "FrameSource", "HDF5Frames", "NpyFrames", "RawFrames",
           "RsciioFrames", "RSCIIO_READERS", "HDF5_EXTENSIONS"]

"""Interoperability with other 4D-STEM tools: camera files streamed in (:mod:`.frames`: HDF5 frame stacks, .npy,
raw binary, RosettaSciIO formats), py4DSTEM DataCubes in and out (:mod:`.py4dstem`), microscope logs
(:mod:`.microscope_log`).

py4DSTEM is an optional dependency (``pip install 'flowtie-dask[py4dstem]'``); it is imported only when
a function here is called.
"""

from .frames import import_frames, open_frames
from .py4dstem import (
    datacubes_to_store,
    export_result,
    export_store,
    import_files,
    is_scan_store,
    read_datacube,
    store_to_datacubes,
)

__all__ = [
    "import_frames",
    "open_frames",
    "datacubes_to_store",
    "export_result",
    "export_store",
    "import_files",
    "is_scan_store",
    "read_datacube",
    "store_to_datacubes",
]

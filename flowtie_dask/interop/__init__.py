"""Interoperability with other 4D-STEM tools (py4DSTEM DataCubes in and out).

py4DSTEM is an optional dependency (``pip install 'flowtie-dask[py4dstem]'``); it is imported only when
a function here is called.
"""

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
    "datacubes_to_store",
    "export_result",
    "export_store",
    "import_files",
    "is_scan_store",
    "read_datacube",
    "store_to_datacubes",
]

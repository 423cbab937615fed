"""What the py4DSTEM import and export sides share: the record names, the lazy py4DSTEM import and JSON-safe values.

py4DSTEM is imported only inside :func:`_py4dstem`, so importing this module does not need it.
"""

from __future__ import annotations

import os

import numpy as np

#: Name of the py4DSTEM Metadata written on exported objects.
RECORD_NAME = "flowtie_dask"
DATACUBE_RECORD_SCHEMA = "flowtie-dask/datacube"
RESULT_RECORD_SCHEMA = "flowtie-dask/result"


def _py4dstem():
    """Import py4DSTEM (optional dependency) with a one-line error when it is missing."""
    os.environ.setdefault("CUPY_PYLOPS", "0")
    try:
        import py4DSTEM
    except ImportError:
        raise RuntimeError("py4DSTEM is not installed; install it with pip install 'flowtie-dask[py4dstem]'") from None
    return py4DSTEM


def _json_safe(value):
    """Numbers, strings, bools, lists and dicts of them as plain Python (numpy scalars/arrays converted)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist()) if value.size <= 16 else f"array of shape {value.shape}"
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


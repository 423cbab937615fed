"""The runner's whole-scan pass (methods of kind ``"whole"``, e.g. gradient descent): check the declared
memory before anything is read, read and check the scans the method fits, one at a time, into one array,
run the method on it, and read the phase out of its object.
"""

from __future__ import annotations

import numpy as np

from ..backend import require_memory
from ..methods import REGISTRY
from ..quality import BlockReport
from .align import read_aligned

__all__ = ["read_whole", "whole_task"]


def read_whole(handle, geometry, defocus, *, bright_field=None):
    """The oriented, checked scans ``defocus`` of a store.

    Parameters
    ----------
    handle : StoreHandle or str
    geometry : ReconstructionGeometry
    defocus : sequence of int
        Scan indices in the store's order.
    bright_field : (cx, cy, radius), optional
        For the value checks (:func:`flowtie_dask.quality.bright_field_disk`).

    Returns
    -------
    intensity : ndarray, shape (len(defocus), Rx, Ry, Qx, Qy), float32
        Oriented (``geometry.orient``).
    report : BlockReport
        Values repaired.
    """
    rx, ry = geometry.scan_shape
    out = np.empty((len(defocus), rx, ry) + tuple(geometry.detector_shape), dtype=np.float32)
    report = BlockReport()
    for i, s in enumerate(defocus):  # one scan at a time: the peak is the output plus one scan
        block, r = read_aligned(handle, geometry, range(rx), range(ry), defocus=[int(s)], bright_field=bright_field)
        out[i] = geometry.orient(block[0])
        report = report.merge(r)
        del block
    return out, report


def _worker_memory_limit():
    """Bytes a Dask worker running this task may use (None outside a worker, or when it has no limit)."""
    try:
        from distributed import get_worker

        limit = get_worker().memory_manager.memory_limit
    except (ImportError, ValueError, AttributeError):
        return None
    return int(limit) if limit else None


def whole_task(handle, geometry, method, needs, *, device: str = "cpu", progress: bool = False,
               bright_field=None):
    """The whole-scan pass as one task (run inline, on a Dask thread or on a worker, where the memory is
    checked): memory check, read, :meth:`Method.run_whole`.

    Parameters
    ----------
    handle : StoreHandle
    geometry : ReconstructionGeometry
    method : Method
        Of kind ``"whole"``.
    needs : Needs
        ``method.needs(geometry)``.
    device : {"cpu", "gpu"}
    progress : bool
        A bar over the method's steps on stderr (in-process runs).
    bright_field : (cx, cy, radius), optional

    Returns
    -------
    obj, illumination, origin, attrs
        As :meth:`Method.run_whole` (which may overwrite the scans it is given: nothing else holds them).
    report : BlockReport
        Values repaired in the scans read.
    """
    tiled = [name for name, cls in REGISTRY.items() if cls.kind != "whole"]
    require_memory(int(needs.memory), device=device, limit=_worker_memory_limit() if device == "cpu" else None,
                   what=f"--method {method.name} works on the whole scan at once and",
                   instead=f"crop the scan or use a tiled method (--method {', '.join(tiled)})")
    defocus = (0, 1, 2) if needs.defocus is None else tuple(needs.defocus)
    intensity, report = read_whole(handle, geometry, defocus, bright_field=bright_field)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=method.name, unit="it")

    def report_step(done, total, loss):
        bar.total = total
        bar.set_postfix(loss=f"{loss:.3e}", refresh=False)
        bar.update(done - bar.n)

    try:
        obj, ill, origin, attrs = method.run_whole(intensity, geometry, device=device,
                                                   progress=report_step if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    return obj, ill, origin, attrs, report

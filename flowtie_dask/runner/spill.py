"""The global path's transposition through a scratch folder on disk, for scans whose field does not belong in
the workers' memory: each tile's field is written to raw files chunked by tile × block of detector rows
(:mod:`.chunkfiles`), each block of rows is read back over the whole scan, integrated and written to a phase array
chunked the same way, and each tile's projection reads its phase from there.

Every task then holds one tile or one block of rows, so worker memory follows the tile and the block, not the
scan (in memory, the whole field (2/3 of the data) stays in the workers until the last block is integrated).
Writes are whole chunks (tiles and row blocks lie on the chunk grid), so tasks on different workers never share
one. The folder must be visible to every worker (the store already is); it is removed after the run.
"""

from __future__ import annotations

import os

import numpy as np

from .chunkfiles import ChunkFiles
from .tasks import field_task, field_total, field_window, integrate_window, project_task
from .tiles import load_field

__all__ = ["create_scratch", "spill_field_task", "spill_integrate_task", "spill_project_task"]


def create_scratch(folder: str, scan_shape, detector_shape, *, tile: tuple[int, int], rows: int) -> str:
    """Make the scratch arrays in a new ``folder`` (:class:`~.chunkfiles.ChunkFiles`): ``field`` (2, Rx, Ry, Qx,
    Qy) and ``phase`` (Rx, Ry, Qx, Qy), float32, chunks of one field channel × ``tile`` scan positions × ``rows``
    detector rows (a projection that takes I₀ from the field reads that channel alone)."""
    (rx, ry), (qx, qy) = scan_shape, detector_shape
    os.makedirs(folder, exist_ok=False)
    ChunkFiles.create(os.path.join(folder, "field"), (2, rx, ry, qx, qy), (1, tile[0], tile[1], rows, qy))
    ChunkFiles.create(os.path.join(folder, "phase"), (rx, ry, qx, qy), (tile[0], tile[1], rows, qy))
    return folder


def _array(folder: str, name: str) -> ChunkFiles:
    return ChunkFiles(os.path.join(folder, name))


def spill_field_task(path: str, geometry, tile, scratch: str, *, method, device: str = "cpu", cache=None,
                     name: str = "", bright_field=None, load: str | None = None, total: bool = False):
    """Stage 1: a tile's field (:func:`~flowtie_dask.runner.tasks.field_task`, or the resume cache's ``load``)
    written into ``scratch``'s field array; returns the block's repair report and, with ``total``, the field's
    sum over the tile's positions (:func:`~flowtie_dask.runner.tasks.field_total`; else None)."""
    if load is not None:
        g, report = load_field(load)
    else:
        g, report = field_task(path, geometry, tile, method=method, device=device, cache=cache, name=name,
                               bright_field=bright_field, compact=False)  # written out and dropped
    _array(scratch, "field")[:, tile.xs[0]:tile.xs[-1] + 1, tile.ys[0]:tile.ys[-1] + 1] = g
    return report, field_total(g) if total else None


def spill_integrate_task(scratch: str, *after, method, geometry, boundary: str, ranges, rows: tuple[int, int],
                         summary=None):
    """Stage 2: ``method.integrate`` of detector ``rows``, reading only the rows of ``ranges``
    (:meth:`Method.field_rows`) of the whole field in ``scratch``; the phase goes to ``scratch``'s phase array."""
    window = field_window([_array(scratch, "field")], [0], ranges)  # read from the array: only those rows
    phase = integrate_window(window, method, geometry, boundary=boundary, ranges=ranges, rows=rows, summary=summary)
    _array(scratch, "phase")[:, :, rows[0]:rows[1]] = np.asarray(phase, dtype=np.float32)
    return rows


def spill_project_task(path: str, geometry, tile, scratch: str, *after, i0_channel: int | None = None, **kwargs):
    """Stage 3: :func:`~flowtie_dask.runner.tasks.project_task` of a tile, its phase read from ``scratch`` (and
    its in-focus intensity too, from channel ``i0_channel`` of the field, when the method's field holds it:
    ``Method.field_i0``; uncompressed, so cheaper than decompressing the focus scan again)."""
    xs, ys = slice(tile.xs[0], tile.xs[-1] + 1), slice(tile.ys[0], tile.ys[-1] + 1)
    phase = _array(scratch, "phase")[xs, ys]
    i0 = None if i0_channel is None else _array(scratch, "field")[i0_channel, xs, ys]
    return project_task(path, geometry, tile, phase, i0=i0, **kwargs)

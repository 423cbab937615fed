"""What one Dask task (or one inline call) of the runner computes: read a checked block, run the method's pure
array function on it, return a partial (and write it to the resume cache). The methods' functions are
called unchanged here, inline or on any worker.
"""

from __future__ import annotations

import functools
import inspect
import json
import os

import numpy as np

from ..backend import asnumpy, get_array_module
from ..geometry import ReconstructionGeometry
from ..quality import BlockReport
from ..reconstruct import project_tile, reconstruct_tile
from .align import read_aligned
from .tiles import report_bytes, save_partial, write_npz

__all__ = ["check_field_summary", "field_summary_of", "field_task", "field_total", "integrate_task", "load_reduction",
           "project_task", "reduce_task", "sum_totals", "tile_task"]


def tile_task(path: str, geometry: ReconstructionGeometry, tile: dict, *, method, periodic: bool,
              device: str = "cpu", cache: str | None = None, name: str = "", bright_field=None):
    """One Dask task: read a haloed tile, take the probe-frame phase of its patterns with ``method.phase``
    and return the interior's partial projection.

    Returns
    -------
    offset : (int, int)
    numerator : ndarray, complex128 (host)
    illumination : ndarray, float64 (host)
    report : BlockReport
        Values repaired in the tile's block.
    """
    xp = get_array_module(device=device)
    block, report = read_aligned(path, geometry, tile.rows, tile.cols, bright_field=bright_field)
    block = xp.asarray(block)
    offset, num, ill = reconstruct_tile(block, geometry, xs=tile.xs, ys=tile.ys, interior=tile.interior,
                                        periodic=periodic, boundary=tile.boundary, phase_method=method.phase,
                                        consistency=method.consistency)
    return save_partial(cache, name, (offset, asnumpy(num), asnumpy(ill), report))


def field_task(path: str, geometry: ReconstructionGeometry, tile: dict, *, method, device: str = "cpu",
               cache: str | None = None, name: str = "", bright_field=None, compact: bool = True):
    """Stage 1 of the global path: ``method.field`` of a tile's interior positions.

    With ``cache``, the field and the block's repair report are also written there atomically
    (``NAME.npz``) so that a resumed run skips the model on this tile (the field is 2/3 of the tile's
    data size on disk). Without ``compact`` (the files route, which writes the field out and drops it) the block
    is given up (``own``): the method may write its field over it. With ``compact`` it is not, and a field that
    is a view of the block all the same is copied out (a field kept in memory holds no more than its own bytes).

    Returns
    -------
    field : ndarray, shape (2, tx, ty, Qx, Qy), float32 (host) (a gradient in rad/Å for FlowTIE)
    report : BlockReport
        Values repaired in the tile's haloed block (all three defocus values).
    """
    xp = get_array_module(device=device)
    block, report = read_aligned(path, geometry, tile.rows, tile.cols, bright_field=bright_field)
    block = geometry.orient(xp.asarray(block))
    own = {"own": True} if not compact and _takes_own(type(method)) else {}  # a plug-in without ``own``: none
    _, g = method.field(block, geometry, interior=tile.interior, **own)
    del block
    g = asnumpy(g).astype(np.float32, copy=False)
    if compact and g.base is not None and g.base.nbytes > g.nbytes:
        g = g.copy()
    if cache is not None:
        write_npz(os.path.join(cache, f"{name}.npz"), field=g, report=report_bytes(report))
    return g, report


@functools.lru_cache(maxsize=None)
def _takes_own(cls) -> bool:
    """Whether ``cls.field`` takes the ``own`` keyword (:meth:`Method.field`)."""
    return "own" in inspect.signature(cls.field).parameters


def integrate_task(*blocks, method, geometry: ReconstructionGeometry, boundary: str, starts, ranges,
                   rows: tuple[int, int], summary=None):
    """Stage 2: ``method.integrate`` of detector ``rows`` over the whole scan, from the blocks of the whole scan's
    field that hold the rows it reads (each (2, Rx, Ry, qb, Qy), starting at detector rows ``starts``, ascending)
    → (Rx, Ry, stop − start, Qy) float32. Only the rows of ``ranges`` (:meth:`Method.field_rows`) are kept."""
    return np.asarray(integrate_window(field_window(blocks, starts, ranges), method, geometry, boundary=boundary,
                                       ranges=ranges, rows=rows, summary=summary), dtype=np.float32)


def field_window(blocks, starts, ranges):
    """The rows of ``ranges`` (disjoint, ascending [start, stop)) out of row blocks starting at detector rows
    ``starts`` (arrays, or scratch arrays read only on those rows: :class:`.chunkfiles.ChunkFiles`), concatenated
    over the detector-row axis (axis 3) into one array (2, Rx, Ry, W, Qy)."""
    pieces = []
    for lo, hi in ranges:
        for s, b in zip(starts, blocks):
            a, z = max(lo, s), min(hi, s + b.shape[3])
            if a < z:
                pieces.append(b[:, :, :, a - s:z - s])
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=3)


def integrate_window(window, method, geometry, *, boundary: str, ranges, rows, summary=None):
    """``method.integrate`` of a window holding the rows of ``ranges`` (its ``row0``: the first row when they are
    one range, else every row)."""
    row0 = ranges[0][0] if len(ranges) == 1 else np.concatenate([np.arange(a, b) for a, b in ranges])
    return method.integrate(window, geometry, boundary=boundary, row0=row0, rows=rows, summary=summary)


def field_total(field):
    """The sum of a tile's field (2, tx, ty, Qx, Qy) over its scan positions → (2, Qx, Qy) float64 (host)."""
    return asnumpy(field.sum(axis=(1, 2), dtype=np.float64))


def sum_totals(*totals):
    """The sum of tiles' :func:`field_total` (2, Qx, Qy), float64."""
    return np.sum(totals, axis=0)


def field_summary_of(count: int, *totals, method):
    """``method.field_summary`` of the whole field from the tiles' :func:`field_total` (or partial sums of them)
    and the scan's position ``count``."""
    return method.field_summary(sum_totals(*totals), count)


def check_field_summary(method) -> None:
    """TypeError unless ``method.field_summary`` takes ``(total, count)`` (a plug-in written for the earlier form,
    one block of detector rows of the whole field, is named before any tile is read)."""
    params = [p for p in inspect.signature(method.field_summary).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(params) != 2:
        names = ", ".join(p.name for p in params)
        raise TypeError(f"method {method.name!r}: field_summary takes ({names}); it must take (total, count), the "
                        "field summed over the scan's positions and their number (see Method.field_summary)")


def project_task(path: str, geometry: ReconstructionGeometry, tile: dict, phase: np.ndarray, *, periodic: bool,
                 device: str = "cpu", cache: str | None = None, name: str = "", bright_field=None,
                 consistency: int = 0, i0=None):
    """Stage 3: exit waves of a tile's interior from its integrated phase and project them (with ``consistency``
    diffraction-power iterations, :func:`~flowtie_dask.reconstruct.project_tile`).

    The in-focus patterns of the interior are read (no halo) and checked like the field stage's, unless ``i0``
    (tx, ty, Qx, Qy) gives them as the field stage had them, oriented (their repairs are in its report).

    Returns
    -------
    offset, numerator, illumination, report
        As :func:`tile_task` (host arrays).
    """
    xp = get_array_module(device=device)
    xs, ys = tile.xs, tile.ys
    if i0 is None:
        block, report = read_aligned(path, geometry, list(xs), list(ys), defocus=[geometry.focus_index],
                                     bright_field=bright_field)
        i0 = geometry.orient(xp.asarray(block[0]))
    else:
        i0, report = xp.asarray(i0), BlockReport()
    phase = xp.asarray(phase) + xp.angle(geometry.probe_spectrum(xp)).astype(np.float32)[None, None]
    offset, num, ill = project_tile(i0, phase, geometry, xs=xs, ys=ys, periodic=periodic, consistency=consistency)
    return save_partial(cache, name, (offset, asnumpy(num), asnumpy(ill), report))




def reduce_task(path: str, geometry: ReconstructionGeometry, tile: dict, *, method, device: str = "cpu",
                cache: str | None = None, name: str = "", bright_field=None, defocus=None):
    """One pass of a ``"reduce"`` method: ``method.reduce`` of the oriented patterns of a tile's interior
    (of the scans ``defocus``, the method's ``needs().defocus``; all three when None).

    Returns
    -------
    (x0, y0) : (int, int)
        The interior's first scan position.
    arrays : dict of ndarray, each shape (..., tx, ty) (host)
    report : BlockReport
    """
    xp = get_array_module(device=device)
    xs, ys = tile.xs, tile.ys
    block, report = read_aligned(path, geometry, list(xs), list(ys), defocus=defocus, bright_field=bright_field)
    arrays = {k: asnumpy(v) for k, v in method.reduce(geometry.orient(xp.asarray(block)), geometry).items()}
    if cache is not None:
        write_npz(os.path.join(cache, f"{name}.npz"), offset=np.array([xs[0], ys[0]]), report=report_bytes(report),
                  **{f"r_{k}": v for k, v in arrays.items()})
    return (xs[0], ys[0]), arrays, report


def load_reduction(file: str):
    """A :func:`reduce_task` result written by an earlier run (same tuple)."""
    with np.load(file) as z:
        arrays = {k[2:]: z[k] for k in z.files if k.startswith("r_")}
        report = BlockReport.from_full(json.loads(z["report"].tobytes().decode()))
        return (int(z["offset"][0]), int(z["offset"][1])), arrays, report

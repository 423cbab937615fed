"""The runner's Dask graphs: one pass over tiles (partial projections), the two-pass global path of field methods
(fields per tile → rechunk to blocks of detector rows → the method's ``integrate`` of each block, with the
neighbouring blocks it asks for → projection per tile), and the tree sum of partials. Tasks are named ``METHOD-KIND-X-Y-TOKEN`` after the method and the tile's first scan position (the names
the dashboard's task stream and the progress line show).
"""

from __future__ import annotations

import os

import numpy as np

from ..methods.base import Method
from ..quality import BlockReport
from .spill import create_scratch, spill_field_task, spill_integrate_task, spill_project_task
from .tasks import (check_field_summary, field_summary_of, field_task, field_total, integrate_task, project_task,
                    sum_totals)
from .tiles import load_field, load_partial

__all__ = ["accumulate", "global_parts", "run_token", "tile_name"]


def tile_name(kind: str, t) -> str:
    """File name of a tile's partial in the resume cache (the cache's record fixes everything else)."""
    return f"{kind}-{t.xs[0]}-{t.ys[0]}"


def run_token(path, tiles, periodic, method, geometry) -> str:
    """Deterministic part of the Dask keys: store, tiling, the method's identity (not a model's bytes) and the
    geometry the tasks run on (calibration, window rotation, band limit: runs that differ in them share no key)."""
    import dask

    return dask.base.tokenize(path, tiles, periodic, method.identity(), geometry)[:12]


def row_block(scan_shape, detector_shape) -> int:
    """Detector rows per block of the global path: the whole scan's field of a block within 64 MiB."""
    (rx, ry), (qx, qy) = scan_shape, detector_shape
    return max(1, min(qx, (64 * 2**20) // max(1, 2 * rx * ry * qy * 4)))


def global_parts(st, handle, geometry, tiles, *, periodic, method, device, cache=None, done=(), keep_fields=False,
                  bright_field=None, scratch=None):
    """Partials of the three-stage graph: per-tile fields → whole-scan integration per detector-pixel block
    (rechunk in the workers' memory, or through the ``scratch`` folder: :mod:`.spill`) → per-tile projection.
    Tiled equals whole-scan up to the model's view of tile edges."""
    import dask
    import dask.array as da

    rx, ry = geometry.scan_shape
    qx, qy = geometry.detector_shape
    starts_x = sorted({t.xs[0] for t in tiles})
    starts_y = sorted({t.ys[0] for t in tiles})
    grid = {(t.xs[0], t.ys[0]): t for t in tiles}
    geo = geometry  # embedded in each task: no separate key pulling every tile to the worker holding it
    token = run_token(st.path, tiles, periodic, method, geometry)
    names = {(t.xs[0], t.ys[0]): tile_name("project", t) for t in tiles}
    if all(names[k] in done for k in names):  # every projection finished in an earlier run
        load = dask.delayed(load_partial, pure=True)
        return [load(os.path.join(cache, f"{names[k]}.npz")) for k in names]
    if scratch is not None:
        return _spilled_parts(handle, geo, grid, names, token, scratch, periodic=periodic, method=method,
                              device=device, cache=cache, done=done, keep_fields=keep_fields,
                              bright_field=bright_field)
    import operator

    field = dask.delayed(field_task, pure=True)
    pick = dask.delayed(operator.getitem, pure=True)
    rows, reports, totals = [], [], []
    summed = _needs_summary(method)
    for x0 in starts_x:
        row = []
        for y0 in starts_y:
            t = grid[(x0, y0)]
            shape = (2, len(t.xs), len(t.ys), qx, qy)
            fname = tile_name("field", t)
            if fname in done:
                task = dask.delayed(load_field, pure=True)(os.path.join(cache, f"{fname}.npz"),
                                                           dask_key_name=f"{method.name}-{fname}-{token}")
            else:
                task = field(handle, geo, t, method=method, device=device,
                             cache=cache if keep_fields else None, name=fname, bright_field=bright_field,
                             dask_key_name=f"{method.name}-{fname}-{token}")
            row.append(da.from_delayed(pick(task, 0), shape=shape, dtype=np.float32))
            reports.append(pick(task, 1))
            if summed:
                totals.append(dask.delayed(field_total, pure=True)(
                    pick(task, 0), dask_key_name=f"{method.name}-sums-{x0}-{y0}-{token}"))
        rows.append(da.concatenate(row, axis=2))
    g = da.concatenate(rows, axis=1)
    qb = row_block(geometry.scan_shape, geometry.detector_shape)
    # tasks, not P2P: P2P outputs handed to delayed tasks get lost ("lost dependencies", dask/dask#11902,
    # #12055; seen on a 256×256 scan), and P2P's disk buffers would not help these ≤ 64 MiB blocks anyway
    g = g.rechunk((2, rx, ry, qb, qy), method="tasks")
    boundary = "periodic" if periodic else "mirror"
    field_blocks = g.to_delayed(optimize_graph=False)[0, 0, 0, :, 0]  # detector-row blocks of the whole field
    edges = [0, *np.cumsum(g.chunks[3]).tolist()]
    summary = _summary(rx * ry, totals, method) if summed else None
    solve = dask.delayed(integrate_task, pure=True)
    columns = []
    for k in range(len(field_blocks)):
        span = (edges[k], edges[k + 1])
        ranges = method.field_rows(span, geometry, boundary=boundary)
        used = sorted({b for lo, hi in ranges for b in range(int(np.searchsorted(edges, lo, side="right") - 1),
                                                               int(np.searchsorted(edges, hi, side="left")))})
        task = solve(*[field_blocks[b] for b in used], method=method, geometry=geometry, boundary=boundary,
                     starts=[edges[b] for b in used], ranges=ranges, rows=span, summary=summary,
                     dask_key_name=f"{method.name}-integrate-{span[0]}-{token}")
        columns.append(da.from_delayed(task, shape=(rx, ry, span[1] - span[0], qy), dtype=np.float32))
    phase = da.concatenate(columns, axis=2)
    phase = phase.rechunk((tuple(len(grid[(x0, starts_y[0])].xs) for x0 in starts_x),
                           tuple(len(grid[(starts_x[0], y0)].ys) for y0 in starts_y), (qx,), (qy,)),
                          method="tasks")
    # (nx, ny, 1, 1) Delayed, the supported hand-over from arrays to delayed tasks; not optimised: an optimised
    # graph fuses the field tasks under new keys, and the repair reports (which use the field keys) ran every
    # tile's model a second time
    blocks = phase.to_delayed(optimize_graph=False)
    proj = dask.delayed(project_task, pure=True)
    load = dask.delayed(load_partial, pure=True)
    parts = []
    for i, x0 in enumerate(starts_x):
        for j, y0 in enumerate(starts_y):
            name = names[(x0, y0)]
            if name in done:
                parts.append(load(os.path.join(cache, f"{name}.npz")))
            else:
                parts.append(proj(handle, geo, grid[(x0, y0)], blocks[i, j, 0, 0], periodic=periodic, device=device,
                                  cache=cache, name=name, bright_field=bright_field, consistency=method.consistency,
                                  dask_key_name=f"{method.name}-{name}-{token}"))
    return parts + reports  # the field stage's repair reports (all three defocus values) join the sum


def _spilled_parts(handle, geometry, grid, names, token, scratch, *, periodic, method, device, cache, done,
                   keep_fields, bright_field):
    """:func:`global_parts` through the scratch folder (:mod:`.spill`): the stages hand over file chunks, not
    arrays, so each task holds one tile or one block of detector rows."""
    import operator

    import dask

    (rx, ry), (qx, qy) = geometry.scan_shape, geometry.detector_shape
    token = dask.base.tokenize(token, "files", scratch)[:12]  # other values than the memory route's: other keys
    first, qb = grid[min(grid)], row_block((rx, ry), (qx, qy))
    create_scratch(scratch, (rx, ry), (qx, qy), tile=(len(first.xs), len(first.ys)), rows=qb)
    field, pick, written = dask.delayed(spill_field_task, pure=True), dask.delayed(operator.getitem, pure=True), []
    summed = _needs_summary(method)
    for (x0, y0), t in grid.items():
        fname = tile_name("field", t)
        load = os.path.join(cache, f"{fname}.npz") if fname in done else None
        written.append(field(handle, geometry, t, scratch, method=method, device=device,
                             cache=cache if keep_fields else None, name=fname, bright_field=bright_field, load=load,
                             total=summed, dask_key_name=f"{method.name}-{fname}-{token}"))
    reports = [pick(w, 0) for w in written]
    boundary = "periodic" if periodic else "mirror"
    spans = [(a, min(a + qb, qx)) for a in range(0, qx, qb)]
    summary = None
    if summed:
        summary = _summary(rx * ry, [pick(w, 1) for w in written], method)
    solve = dask.delayed(spill_integrate_task, pure=True)
    solved = [solve(scratch, *reports, method=method, geometry=geometry, boundary=boundary,
                    ranges=method.field_rows(span, geometry, boundary=boundary), rows=span, summary=summary,
                    dask_key_name=f"{method.name}-integrate-{span[0]}-{token}") for span in spans]
    proj, load = dask.delayed(spill_project_task, pure=True), dask.delayed(load_partial, pure=True)
    parts = [load(os.path.join(cache, f"{names[k]}.npz")) if names[k] in done else
             proj(handle, geometry, t, scratch, *solved, periodic=periodic, device=device, cache=cache, name=names[k],
                  bright_field=bright_field, consistency=method.consistency, i0_channel=method.field_i0,
                  dask_key_name=f"{method.name}-{names[k]}-{token}")
             for k, t in grid.items()]
    return parts + reports


def _needs_summary(method) -> bool:
    """Whether the method has a :meth:`Method.field_summary` (then its field tasks sum their tiles)."""
    return type(method).field_summary is not Method.field_summary


def _summary(count: int, totals, method):
    """``method.field_summary`` of the tiles' field sums, summed in a tree of eights (no task holds more than eight
    tiles' sums: 16·Qx·Qy bytes each)."""
    import dask

    check_field_summary(method)
    add = dask.delayed(sum_totals, pure=True)
    while len(totals) > 8:
        totals = [add(*totals[i:i + 8]) for i in range(0, len(totals), 8)]
    return dask.delayed(field_summary_of, pure=True)(count, *totals, method=method)


def accumulate(shape, *parts):
    """Sum tile partials ``(offset, num, ill, report)``, partial sums ``(num, ill, report)`` and reports."""
    num = np.zeros(shape, dtype=np.complex128)
    ill = np.zeros(shape, dtype=np.float64)
    report = BlockReport()
    for part in parts:
        if isinstance(part, BlockReport):
            report = report.merge(part)
            continue
        if len(part) == 3 and isinstance(part[0], np.ndarray):
            num += part[0]
            ill += part[1]
            report = report.merge(part[2])
            continue
        (ox, oy), n, d, r = part
        sx, sy = n.shape
        num[ox:ox + sx, oy:oy + sy] += n
        ill[ox:ox + sx, oy:oy + sy] += d
        report = report.merge(r)
    return num, ill, report



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
from .tasks import field_summary_task, field_task, integrate_task, merge_summaries, project_task
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


def global_parts(st, handle, geometry, tiles, *, periodic, method, device, cache=None, done=(), keep_fields=False,
                  bright_field=None):
    """Partials of the three-stage graph: per-tile fields → whole-scan integration per detector-pixel block
    (rechunk) → per-tile projection. Tiled equals whole-scan up to the model's view of tile edges."""
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
    import operator

    field = dask.delayed(field_task, pure=True)
    pick = dask.delayed(operator.getitem, pure=True)
    rows, reports = [], []
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
        rows.append(da.concatenate(row, axis=2))
    g = da.concatenate(rows, axis=1)
    qb = max(1, min(qx, (64 * 2**20) // max(1, 2 * rx * ry * qy * 4)))
    # tasks, not P2P: P2P outputs handed to delayed tasks get lost ("lost dependencies", dask/dask#11902,
    # #12055; seen on a 256×256 scan), and P2P's disk buffers would not help these ≤ 64 MiB blocks anyway
    g = g.rechunk((2, rx, ry, qb, qy), method="tasks")
    boundary = "periodic" if periodic else "mirror"
    field_blocks = g.to_delayed(optimize_graph=False)[0, 0, 0, :, 0]  # detector-row blocks of the whole field
    edges = [0, *np.cumsum(g.chunks[3]).tolist()]
    summary = None
    if type(method).field_summary is not Method.field_summary:
        part = dask.delayed(field_summary_task, pure=True)
        summary = dask.delayed(merge_summaries, pure=True)(*[part(b, method=method) for b in field_blocks])
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



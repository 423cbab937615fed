"""The distributed reconstruction: scan tiles with a halo read from the Zarr store → per-tile kernels on
Dask workers → partial numerators and illuminations → stitched object (DESIGN §5).

Each task opens the store itself and reads only its haloed tile, so worker memory is bounded by the
tile size, not the scan size; the graph holds no array data. Partials are summed in a tree and divided
once at the end. The kernels are :mod:`flowtie_dask.reconstruct`'s and run unchanged inline.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import __version__
from .geometry import ReconstructionGeometry
from .projection import divide_illumination, unwrap
from .quality import check_phase
from .reconstruct import reconstruct_tile
from .store import ScanStore, open_scan_store

__all__ = ["ReconstructionResult", "WHOLE_SCAN_BYTES", "plan_tiles", "reconstruct_store", "tile_task"]

#: Scans up to this size (bytes of stored intensity) are reconstructed as one tile by default.
WHOLE_SCAN_BYTES = 512 * 2**20


@dataclass
class ReconstructionResult:
    """A stitched object.

    Attributes
    ----------
    phase : ndarray, shape (Nx, Ny)
        Projected phase arg O (unwrapped where it exceeds ±π), rad.
    amplitude : ndarray, shape (Nx, Ny)
        |O|.
    illumination : ndarray, shape (Nx, Ny)
        Σ_r̂ |P(r − r̂)|² (unit-norm probe).
    pixel_size : (float, float)
        Å.
    origin : (float, float)
        Position of pixel (0, 0) relative to the first scan position, Å.
    periodic : bool
        The object is one period of a periodic specimen.
    attrs : dict
        Method, parameters, provenance and timings.
    """

    phase: np.ndarray
    amplitude: np.ndarray
    illumination: np.ndarray
    pixel_size: tuple[float, float]
    origin: tuple[float, float]
    periodic: bool
    attrs: dict = field(default_factory=dict)


def plan_tiles(scan_shape: tuple[int, int], tile: tuple[int, int] | None, halo: int, *, periodic: bool):
    """Tiles over the scan.

    Parameters
    ----------
    scan_shape : (Rx, Ry)
    tile : (tx, ty) or None
        Interior size in scan positions; None = one tile over the whole scan.
    halo : int
        Extra positions read on each side (wrapped around for periodic scans, clipped otherwise).
    periodic : bool

    Returns
    -------
    list of dict
        ``rows``/``cols``: global indices read (with halo, possibly wrapped), ``xs``/``ys``: interior
        global ranges, ``interior``: interior slices within the read block, ``boundary``.
    """
    rx, ry = scan_shape
    if tile is None:
        tile = (rx, ry)
    tx, ty = min(tile[0], rx), min(tile[1], ry)
    tiles = []
    for x0 in range(0, rx, tx):
        for y0 in range(0, ry, ty):
            xs, ys = range(x0, min(x0 + tx, rx)), range(y0, min(y0 + ty, ry))
            whole = len(xs) == rx and len(ys) == ry
            h = 0 if whole else halo
            if periodic:
                rows = [i % rx for i in range(xs[0] - h, xs[-1] + h + 1)]
                cols = [j % ry for j in range(ys[0] - h, ys[-1] + h + 1)]
                lo_x, lo_y = h, h
            else:
                a, b = max(0, xs[0] - h), min(rx, xs[-1] + h + 1)
                c, d = max(0, ys[0] - h), min(ry, ys[-1] + h + 1)
                rows, cols = list(range(a, b)), list(range(c, d))
                lo_x, lo_y = xs[0] - a, ys[0] - c
            boundary = "periodic" if (whole and periodic) else "mirror"
            tiles.append(dict(rows=rows, cols=cols, xs=xs, ys=ys, boundary=boundary,
                              interior=(slice(lo_x, lo_x + len(xs)), slice(lo_y, lo_y + len(ys)))))
    return tiles


def read_checked(path: str, rows: list[int], cols: list[int], *, defocus=None, bright_field=None):
    """Read intensity[defocus][:, rows, cols] and check its values (:func:`flowtie_dask.quality.check_block`).

    Parameters
    ----------
    path : str
        Scan store.
    rows, cols : list of int
        Global scan indices (contiguous or wrapped).
    defocus : list of int, optional
        Defocus indices to read (default all three).
    bright_field : (cx, cy, radius), optional
        Bright-field disk in stored detector pixels (:func:`bright_field_disk`).

    Returns
    -------
    block : ndarray, shape (D, len(rows), len(cols), Qx, Qy), float32 (host)
    report : BlockReport
    """
    from .quality import check_block
    from .store import read_block

    block = read_block(path, rows, cols, defocus=defocus)
    defocus = [0, 1, 2] if defocus is None else list(defocus)
    return check_block(block, rows=rows, cols=cols, defocus=defocus, source=path, bright_field=bright_field)


def bright_field_disk(metadata) -> tuple[float, float, float]:
    """(cx, cy, radius) of the bright-field disk in stored detector pixels.

    Parameters
    ----------
    metadata : ScanMetadata

    Returns
    -------
    (float, float, float)
        Centre (pixels along Qx, Qy) and radius α/λ/Δq (pixels; the smaller sampling).
    """
    from .physics.constants import wavelength

    radius = metadata.semiangle * 1e-3 / wavelength(metadata.energy) / min(metadata.detector_sampling)
    return float(metadata.detector_center[0]), float(metadata.detector_center[1]), float(radius)


def _save_partial(cache: str | None, name: str, part: tuple) -> tuple:
    """Write a finished tile partial atomically into the resume cache (no-op without a cache)."""
    if cache is None:
        return part
    (ox, oy), num, ill, report = part
    _write_npz(os.path.join(cache, f"{name}.npz"), offset=np.array([ox, oy]), num=num, ill=ill,
               report=_report_bytes(report))
    return part


def load_partial(file: str) -> tuple:
    """A tile partial written by an earlier run.

    Returns
    -------
    offset : (int, int)
        Object pixel of the partial's (0, 0).
    numerator : ndarray, complex128, shape (fx, fy)
    illumination : ndarray, float64, shape (fx, fy)
    report : BlockReport
    """
    from .quality import BlockReport

    with np.load(file) as z:
        report = BlockReport.from_full(json.loads(z["report"].tobytes().decode()))
        return (int(z["offset"][0]), int(z["offset"][1])), z["num"], z["ill"], report


def tile_task(path: str, geometry: ReconstructionGeometry, tile: dict, *, periodic: bool,
              phase_method: Callable | None = None, device: str = "cpu", cache: str | None = None,
              name: str = "", bright_field=None):
    """One Dask task: read a haloed tile from the store and return its partial projection.

    Returns
    -------
    offset : (int, int)
    numerator : ndarray, complex128 (host)
    illumination : ndarray, float64 (host)
    report : BlockReport
        Values repaired in the tile's block.
    """
    from .backend import asnumpy, get_array_module

    xp = get_array_module(device=device)
    block, report = read_checked(path, tile["rows"], tile["cols"], bright_field=bright_field)
    block = xp.asarray(block)
    offset, num, ill = reconstruct_tile(block, geometry, xs=tile["xs"], ys=tile["ys"], interior=tile["interior"],
                                        periodic=periodic, boundary=tile["boundary"], phase_method=phase_method)
    return _save_partial(cache, name, (offset, asnumpy(num), asnumpy(ill), report))


def field_task(path: str, geometry: ReconstructionGeometry, tile: dict, *, phase_method, device: str = "cpu",
               cache: str | None = None, name: str = "", bright_field=None):
    """Stage 1 of the global integration: the predicted gradient field of a tile's interior positions.

    With ``cache``, the field and the block's repair report are also written there atomically
    (``NAME.npz``) so that a resumed run skips the model on this tile (the field is 2/3 of the tile's
    data size on disk).

    Returns
    -------
    field : ndarray, shape (2, tx, ty, Qx, Qy), float32 (host), rad/Å
    report : BlockReport
        Values repaired in the tile's haloed block (all three defocus values).
    """
    from .backend import asnumpy, get_array_module

    xp = get_array_module(device=device)
    block, report = read_checked(path, tile["rows"], tile["cols"], bright_field=bright_field)
    block = geometry.orient(xp.asarray(block))
    _, g = phase_method.field(block, geometry)
    ix, iy = tile["interior"]
    g = asnumpy(g[:, ix, iy]).astype(np.float32)
    if cache is not None:
        _write_npz(os.path.join(cache, f"{name}.npz"), field=g, report=_report_bytes(report))
    return g, report


def load_field(file: str):
    """A gradient field written by :func:`field_task` in an earlier run.

    Returns
    -------
    field : ndarray, shape (2, tx, ty, Qx, Qy), float32, rad/Å
    report : BlockReport
    """
    from .quality import BlockReport

    with np.load(file) as z:
        return z["field"], BlockReport.from_full(json.loads(z["report"].tobytes().decode()))


def _report_bytes(report) -> np.ndarray:
    return np.frombuffer(json.dumps(report.as_full()).encode(), dtype=np.uint8)


def _write_npz(file: str, **arrays) -> None:
    import io

    from .atomic import write_file_atomic

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_file_atomic(file, buf.getvalue())


def _readable(file: str) -> bool:
    """A cached piece that a killed run may have left damaged is recomputed, not loaded (the zip directory is
    at the end of the file, so a truncated one fails here)."""
    try:
        with np.load(file) as z:
            z.files  # noqa: B018
        return True
    except Exception:  # noqa: BLE001 - zipfile.BadZipFile, EOFError, OSError, ValueError
        return False


def _integrate_block(g, *, step, boundary):
    """Stage 2: integrate a detector-pixel block of the whole scan's field, (2, Rx, Ry, qb, Qy) → (Rx, Ry, qb, Qy)."""
    from .tie import integrate_gradient

    return integrate_gradient(g[0], g[1], step=step, kind="forward", boundary=boundary).astype(np.float32)


def project_task(path: str, geometry: ReconstructionGeometry, tile: dict, phase: np.ndarray, *, periodic: bool,
                 device: str = "cpu", cache: str | None = None, name: str = "", bright_field=None):
    """Stage 3: exit waves of a tile's interior from its integrated phase and project them.

    The in-focus patterns of the interior are read (no halo) and checked like the field stage's.

    Returns
    -------
    offset, numerator, illumination, report
        As :func:`tile_task` (host arrays).
    """
    from .backend import asnumpy, get_array_module
    from .reconstruct import project_tile

    xp = get_array_module(device=device)
    mid = int(np.argsort(np.asarray(geometry.c10))[1])
    xs, ys = tile["xs"], tile["ys"]
    block, report = read_checked(path, list(xs), list(ys), defocus=[mid], bright_field=bright_field)
    i0 = geometry.orient(xp.asarray(block[0]))
    phase = xp.asarray(phase) + xp.angle(geometry.probe_spectrum(xp)).astype(np.float32)[None, None]
    offset, num, ill = project_tile(i0, phase, geometry, xs=xs, ys=ys, periodic=periodic)
    return _save_partial(cache, name, (offset, asnumpy(num), asnumpy(ill), report))


def _tile_name(kind: str, t: dict) -> str:
    """File name of a tile's partial in the resume cache (the cache's record fixes everything else)."""
    return f"{kind}-{t['xs'][0]}-{t['ys'][0]}"


def _run_token(path, tiles, periodic, phase_method) -> str:
    """Deterministic part of the Dask keys: store, tiling and method (not the model's weights' bytes)."""
    import dask

    who = (type(phase_method).__name__, getattr(phase_method, "path", None), getattr(phase_method, "symmetry", None))
    return dask.base.tokenize(path, tiles, periodic, who)[:12]


def _global_parts(st, geometry, tiles, *, periodic, phase_method, device, cache=None, done=(), keep_fields=False,
                  bright_field=None):
    """Partials of the three-stage graph: per-tile fields → whole-scan integration per detector-pixel block
    (rechunk) → per-tile projection. Tiled equals whole-scan up to the model's view of tile edges."""
    import dask
    import dask.array as da

    rx, ry = st.scan_shape
    qx, qy = geometry.detector_shape
    starts_x = sorted({t["xs"][0] for t in tiles})
    starts_y = sorted({t["ys"][0] for t in tiles})
    grid = {(t["xs"][0], t["ys"][0]): t for t in tiles}
    geo = dask.delayed(geometry, pure=True)
    token = _run_token(st.path, tiles, periodic, phase_method)
    names = {(t["xs"][0], t["ys"][0]): _tile_name("project", t) for t in tiles}
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
            shape = (2, len(t["xs"]), len(t["ys"]), qx, qy)
            fname = _tile_name("field", t)
            if fname in done:
                task = dask.delayed(load_field, pure=True)(os.path.join(cache, f"{fname}.npz"),
                                                           dask_key_name=f"{fname}-{token}")
            else:
                task = field(st.path, geo, t, phase_method=phase_method, device=device,
                             cache=cache if keep_fields else None, name=fname, bright_field=bright_field,
                             dask_key_name=f"{fname}-{token}")
            row.append(da.from_delayed(pick(task, 0), shape=shape, dtype=np.float32))
            reports.append(pick(task, 1))
        rows.append(da.concatenate(row, axis=2))
    g = da.concatenate(rows, axis=1)
    qb = max(1, min(qx, (64 * 2**20) // max(1, 2 * rx * ry * qy * 4)))
    # tasks, not P2P: P2P outputs handed to delayed tasks get lost ("lost dependencies", dask/dask#11902,
    # #12055; seen on a 256×256 scan), and P2P's disk buffers would not help these ≤ 64 MiB blocks anyway
    g = g.rechunk((2, rx, ry, qb, qy), method="tasks")
    boundary = "periodic" if periodic else "mirror"
    phase = g.map_blocks(_integrate_block, step=geometry.scan_step, boundary=boundary, drop_axis=0,
                         dtype=np.float32)
    phase = phase.rechunk((tuple(len(grid[(x0, starts_y[0])]["xs"]) for x0 in starts_x),
                           tuple(len(grid[(starts_x[0], y0)]["ys"]) for y0 in starts_y), (qx,), (qy,)),
                          method="tasks")
    blocks = phase.to_delayed()  # (nx, ny, 1, 1) Delayed, the supported hand-over from arrays to delayed tasks
    proj = dask.delayed(project_task, pure=True)
    load = dask.delayed(load_partial, pure=True)
    parts = []
    for i, x0 in enumerate(starts_x):
        for j, y0 in enumerate(starts_y):
            name = names[(x0, y0)]
            if name in done:
                parts.append(load(os.path.join(cache, f"{name}.npz")))
            else:
                parts.append(proj(st.path, geo, grid[(x0, y0)], blocks[i, j, 0, 0], periodic=periodic, device=device,
                                  cache=cache, name=name, bright_field=bright_field,
                                  dask_key_name=f"{name}-{token}"))
    return parts + reports  # the field stage's repair reports (all three defocus values) join the sum


def _accumulate(shape, *parts):
    """Sum tile partials ``(offset, num, ill, report)``, partial sums ``(num, ill, report)`` and reports."""
    from .quality import BlockReport

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


def reconstruct_store(
    store: str | ScanStore,
    *,
    method: str = "tie",
    tile_size: int | tuple[int, int] | str | None = "auto",
    halo: int = 16,
    periodic: bool | None = None,
    eps: float = 1e-3,
    client: Any = None,
    progress: bool = True,
    device: str = "cpu",
    phase_method: Callable | None = None,
    model: str | None = None,
    integration: str = "auto",
    symmetry: str = "none",
    cache: str | None = None,
    keep_fields: bool = False,
) -> ReconstructionResult:
    """Reconstruct the projected phase of a scan store, tile by tile on Dask.

    Parameters
    ----------
    store : str or ScanStore
        Path of a scan store (validated) or an opened one.
    method : {"tie", "flowtie"}
        Phase retrieval of each pattern's probe-frame phase: classical TIE, or the FlowTIE model
        (``model``, default the shipped one) whose optics must match the scan.
    tile_size : int or (int, int) or "auto" or None
        Scan positions per tile interior; None reconstructs the whole scan as one tile; "auto" does so
        when the scan's data fit in :data:`WHOLE_SCAN_BYTES`, and uses 64×64-position tiles otherwise.
    halo : int
        Scan positions read around each tile for the phase solver.
    periodic : bool, optional
        Treat the object as one period of the scan (default: the store's ``periodic`` attribute).
    eps : float
        Relative regulariser of the illumination division.
    client : distributed.Client, optional
        None runs on in-process threads.
    progress : bool
    device : {"cpu", "gpu"}
        Array backend inside the tasks (``"gpu"`` on dask-cuda workers).
    phase_method : callable, optional
        Overrides ``method`` (see :func:`flowtie_dask.reconstruct.reconstruct_tile`).
    model : str, optional
        FlowTIE checkpoint for ``method="flowtie"``.
    integration : {"auto", "tile", "global"}
        Where predicted gradient fields are integrated: within each haloed tile, or over the whole scan
        per block of detector pixels after a rechunk (exact: tiled = whole). "auto": global for FlowTIE
        when there is more than one tile.
    symmetry : {"none", "mirror", "d4"}
        FlowTIE only: average the model's prediction over the specimen mirrors (4 evaluations) or the
        square's symmetry group (8); see :class:`flowtie_dask.model.inference.FlowTIEPhase`.
    cache : str, optional
        Folder for finished tile partials (``tile-X-Y.npz``, ``project-X-Y.npz``), each written atomically
        when its task ends. Partials found there are loaded instead of recomputed, so a run interrupted
        after some tiles resumes from them. The caller guarantees the folder belongs to the same inputs
        (:func:`flowtie_dask.resume.resume_workspace` checks a record of them). A damaged piece (a run killed
        while the file system was writing it) is recomputed.
    keep_fields : bool
        With ``cache`` and global integration: also keep each tile's gradient field (``field-X-Y.npz``,
        2/3 of the tile's data size on disk), so a resumed FlowTIE run skips the model on finished tiles;
        without it a resumed run recomputes the fields and reuses only finished projections.

    Returns
    -------
    ReconstructionResult
        ``attrs["tiles_reused"]``/``["tiles_computed"]`` count the partials loaded from / computed into
        ``cache``; ``attrs["data_repairs"]`` lists the repaired patterns and pixels.
    """
    import dask

    from .cluster import compute

    if method not in ("tie", "flowtie") and phase_method is None:
        raise ValueError(f"unknown method {method!r}: use 'tie' or 'flowtie' ('gd' has its own entry point)")
    st = store if isinstance(store, ScanStore) else open_scan_store(store)
    geometry = ReconstructionGeometry.from_metadata(st.metadata, scan_shape=st.scan_shape,
                                                    detector_shape=st.detector_shape)
    if symmetry != "none" and (method != "flowtie" or phase_method is not None):
        raise ValueError(f"symmetry={symmetry!r} averages FlowTIE predictions: use it with method='flowtie'")
    if method == "flowtie" and phase_method is None:
        from .model.inference import FlowTIEPhase

        phase_method = FlowTIEPhase(model, symmetry=symmetry)
    if hasattr(phase_method, "check"):
        phase_method.check(geometry)
    if hasattr(phase_method, "receptive_field"):
        halo = max(halo, 2 * phase_method.receptive_field)
    periodic = geometry.periodic if periodic is None else bool(periodic)
    shape, origin = geometry.object_grid(periodic=periodic)
    if tile_size == "auto":
        tile_size = None if st.intensity.nbytes <= WHOLE_SCAN_BYTES else (64, 64)
    if isinstance(tile_size, int):
        tile_size = (tile_size, tile_size)
    if halo < 0:
        raise ValueError(f"halo must be ≥ 0 scan positions, got {halo}")
    halo = min(halo, max(st.scan_shape))  # more adds nothing (clipped, or wrapped onto itself) but memory
    tiles = plan_tiles(st.scan_shape, tile_size, halo, periodic=periodic)
    start = time.perf_counter()
    if integration not in ("auto", "tile", "global"):
        raise ValueError(f"integration must be 'auto', 'tile' or 'global', got {integration!r}")
    use_global = integration == "global" or (integration == "auto" and hasattr(phase_method, "field")
                                               and len(tiles) > 1)
    if use_global and not hasattr(phase_method, "field"):
        raise ValueError("integration='global' needs a method that predicts gradient fields (flowtie)")
    done = set()
    if cache is not None:
        os.makedirs(cache, exist_ok=True)
        done = {n[:-4] for n in os.listdir(cache) if n.endswith(".npz") and _readable(os.path.join(cache, n))}
    token = _run_token(st.path, tiles, periodic, phase_method)
    bf = bright_field_disk(st.metadata)
    if use_global:
        parts = _global_parts(st, geometry, tiles, periodic=periodic, phase_method=phase_method, device=device,
                              cache=cache, done=done, keep_fields=keep_fields, bright_field=bf)
        names = [_tile_name("project", t) for t in tiles]
        fields_reused = sum(_tile_name("field", t) in done for t in tiles)
    else:
        parts = []
        task = dask.delayed(tile_task, pure=True)
        load = dask.delayed(load_partial, pure=True)
        geo = dask.delayed(geometry, pure=True)
        names = [_tile_name("tile", t) for t in tiles]
        for t, name in zip(tiles, names):
            if name in done:
                parts.append(load(os.path.join(cache, f"{name}.npz")))
            else:
                parts.append(task(st.path, geo, t, periodic=periodic, phase_method=phase_method, device=device,
                                  cache=cache, name=name, bright_field=bf, dask_key_name=f"{name}-{token}"))
    reused = sum(n in done for n in names)
    # tree reduction: groups of 8 partials into full-size sums, then a final sum
    acc = dask.delayed(_accumulate, pure=True)
    while len(parts) > 1:
        parts = [acc(shape, *parts[i:i + 8]) for i in range(0, len(parts), 8)]
    final = acc(shape, parts[0])
    (num, ill, report), = compute(final, client=client, progress=progress)
    obj = divide_illumination(num, ill, eps=eps)
    lit = ill > 0.05 * ill.max() if np.isfinite(ill).all() and ill.max() > 0 else np.ones(ill.shape, bool)
    phase = np.angle(obj)
    check_phase(phase, valid=lit, what=f"the {method} phase of {st.path}")
    phase = np.where(np.isfinite(phase), phase, 0.0)  # only unlit pixels can be non-finite here
    phase = unwrap(phase, periodic=periodic, mask=None if periodic else ~lit)
    elapsed = time.perf_counter() - start
    attrs = {
        "method": method if phase_method is None else getattr(phase_method, "__name__", "custom"),
        "model": getattr(phase_method, "path", None),
        "symmetry": getattr(phase_method, "symmetry", "none"),
        "tile_size": list(tile_size) if tile_size else None,
        "halo": halo,
        "n_tiles": len(tiles),
        "integration": "global" if use_global else "tile",
        "eps": eps,
        "seconds": elapsed,
        "source": st.path,
        "flowtie_dask_version": __version__,
        "scan_metadata": {k: v for k, v in st.metadata.to_attrs().items() if k != "provenance"},
        "tiles_reused": reused,
        "tiles_computed": len(names) - reused,
        "fields_reused": fields_reused if use_global else None,
        "data_repairs": report.as_attrs(),
        "data_repairs_summary": report.summary(),
    }
    return ReconstructionResult(phase=phase, amplitude=np.abs(obj), illumination=ill, pixel_size=geometry.pixel,
                                origin=origin, periodic=periodic, attrs=attrs)



"""One runner for every reconstruction method (DESIGN §7): scan tiles with a halo read from the store →
the method's pure array functions on Dask workers → partials summed in a tree → the stitched object.

The same :class:`~flowtie_dask.methods.base.Method` object runs unchanged inline (no Dask: ``client=None``
uses Dask's in-process threads), on a local or existing distributed cluster, or on dask-cuda workers
(``device="gpu"``). Each task opens the store itself and reads only its tile, so worker memory follows the
tile, not the scan; the graph holds no array data. The runner owns reading and checking tiles
(:mod:`.tiles`), the passes a method declares (:mod:`.graph`), the resume cache, progress and the
result's attributes.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np

from .. import __version__
from ..cluster import compute
from ..bandlimit import scan_band_limit
from ..geometry import ReconstructionGeometry
from ..projection import divide_illumination, unwrap
from ..quality import BlockReport, bright_field_disk, check_phase
from ..results import ReconstructionResult
from ..store import ScanStore, StoreHandle, electrons_per_pattern, open_scan_store
from .graph import accumulate, global_parts, run_token, tile_name
from .tasks import load_reduction, reduce_task, tile_task
from .autotile import auto_tiles
from .tiles import load_partial, plan_tiles, readable
from .align import window_geometry
from .whole import whole_task
from .workers import _memory_of

__all__ = ["SPILL_BYTES", "WHOLE_SCAN_BYTES", "reconstruct"]

#: Scans up to this size (bytes of stored intensity) are reconstructed as one tile by default.
WHOLE_SCAN_BYTES = 512 * 2**20

#: ``scratch="auto"``: a global path's field (bytes, float32) above this goes through files, not memory.
SPILL_BYTES = 256 * 2**20

#: Name prefix of the scratch folders (hidden: a resume folder does not count them as finished pieces).
SCRATCH_PREFIX = ".flowtie-scratch-"


def reconstruct(
    store: str | ScanStore,
    method,
    *,
    tile_size: int | tuple[int, int] | str | None = "auto",
    halo: int = 16,
    periodic: bool | None = None,
    eps: float = 1e-3,
    client: Any = None,
    progress: bool = True,
    device: str = "cpu",
    integration: str = "auto",
    cache: str | None = None,
    keep_fields: bool = False,
    band_limit: str = "auto",
    scratch: str | None = "auto",
) -> ReconstructionResult:
    """Reconstruct the projected phase of a scan store with ``method``.

    Parameters
    ----------
    store : str or ScanStore
        Path of a scan store (validated) or an opened one.
    method : Method
        From :func:`flowtie_dask.methods.get_method`.
    tile_size : int or (int, int) or "auto" or None
        Scan positions per tile interior; None: the whole scan as one tile; "auto": so when the scan's data
        fit in :data:`WHOLE_SCAN_BYTES` (except for reductions, whose tiles cost nothing: at least one per worker
        thread), else tiles sized by bytes (:func:`~.tiles.auto_tile_size`: the haloed
        block of the scans a task reads within :data:`~.tiles.TILE_BYTES` or a quarter of a worker thread's memory,
        e.g. 64×64 positions at a 64×64 detector, 32×32 at 256×256 for TIE's global path; attrs ``tile_reason``
        says why; a run resuming from ``cache`` takes the choice recorded there: :mod:`.autotile`). Ignored by
        whole-scan methods.
    halo : int
        Scan positions read around each tile (at least what the method needs; at most the scan's size).
    periodic : bool, optional
        Treat the object as one period of the scan (default: the store's ``periodic`` attribute).
    eps : float
        Relative regulariser of the illumination division (projecting methods).
    client : distributed.Client, optional
        None runs on in-process threads.
    progress : bool
    device : {"cpu", "gpu"}
        Array backend inside the tasks (``"gpu"`` on dask-cuda workers).
    integration : {"auto", "tile", "global"}
        Field methods: integrate each tile's field within the haloed tile, or over the whole scan per block
        of detector pixels (exact: tiled = whole). "auto": global when there is more than one tile.
    cache : str, optional
        Folder for finished pieces (``tile-X-Y.npz``, ``project-X-Y.npz``, ``reduce-X-Y.npz``), each written
        atomically when its task ends; pieces found there are loaded instead of recomputed (a damaged one is
        recomputed). The caller guarantees the folder belongs to the same inputs
        (:func:`flowtie_dask.resume.resume_workspace` checks a record of them).
    keep_fields : bool
        With ``cache`` and global integration: also keep each tile's gradient field (``field-X-Y.npz``, 2/3
        of the tile's data size on disk) so a resumed run skips the model on finished tiles.
    band_limit : {"auto", "on", "off"}
        Low-pass every scan over the scan axes at 2α/λ, the highest frequency any pattern's pixel holds
        (:mod:`flowtie_dask.bandlimit`: shot noise only above it). "auto": on for a scan with shot noise (counts,
        or a noisy simulation) and a method that gains from it (``Method.band_limits_noise``: FlowTIE).
    scratch : str or "auto" or None
        Global integration: hand the field from tiles to blocks of detector rows through files in a new folder
        inside this one (:mod:`flowtie_dask.runner.spill`: worker memory follows the tile, not the scan; the
        folder holds the data's size uncompressed during the run and is removed after it; every worker must
        see it), or None: in the workers' memory (the whole field, 2/3 of the data). "auto": through files
        when the field exceeds :data:`SPILL_BYTES`, in ``cache`` if given, else (on this machine only) in the
        system's temporary folder, where they fit. A folder given must have room for 1.5× the field.

    Returns
    -------
    ReconstructionResult
        ``attrs``: the method's own (:meth:`Method.attrs`), tiling, timing, provenance,
        ``tiles_reused``/``tiles_computed`` (pieces loaded from / computed into ``cache``) and
        ``data_repairs`` (patterns and pixels repaired by the value checks).
    """
    import dask

    start = time.perf_counter()
    st = store if isinstance(store, ScanStore) else open_scan_store(store)
    geometry = ReconstructionGeometry.from_metadata(st.metadata, scan_shape=st.scan_shape,
                                                    detector_shape=st.detector_shape,
                                                    rotate_windows=method.rotates_windows)
    periodic = geometry.periodic if periodic is None else bool(periodic)
    geometry = dataclasses.replace(geometry, periodic=periodic, electrons_per_pattern=electrons_per_pattern(st))
    if band_limit not in ("auto", "on", "off"):
        raise ValueError(f"band_limit must be 'auto', 'on' or 'off', got {band_limit!r}")
    if band_limit == "on" or (band_limit == "auto" and method.band_limits_noise and geometry.electrons_per_pattern > 0):
        geometry = dataclasses.replace(geometry, scan_band_limit=scan_band_limit(geometry))
    # the geometry the method runs on: the common area of the three scans when they drifted (a window)
    geometry = window_geometry(geometry)
    method.check(geometry)
    needs = method.needs(geometry)
    handle = StoreHandle(st.path)  # what the tasks carry: a path that reads checked blocks (picklable)
    bf = bright_field_disk(st.metadata)
    attrs = dict(method.attrs())
    if needs.whole_scan or method.kind == "whole":
        in_process = client is None or (isinstance(client, str) and client == "inline")
        key = f"{method.name}-whole-{run_token(st.path, [], periodic, method, geometry)}"
        task = dask.delayed(whole_task, pure=True)(handle, geometry, method, needs, device=device,
                                                   progress=progress and in_process, bright_field=bf,
                                                   dask_key_name=key)
        # one task: in this process it runs in this thread (Ctrl-C stops it; all of the memory is there)
        (obj, ill, origin, found, report), = compute(task, client="inline" if in_process else client,
                                                     progress=progress and not in_process,
                                                     label=method.name)
        attrs.update(found)
        phase, amplitude = _read_out(obj, ill, periodic=periodic, what=f"the {method.name} phase of {st.path}")
        attrs.update(integration="whole", device=device, grid="object")
        return _result(st, geometry, phase, amplitude, ill, geometry.pixel, origin, periodic, attrs, report, start=start,
                       tile_size=None, halo=0, n_tiles=1, reused=0, computed=1)
    if halo < 0:
        raise ValueError(f"halo must be ≥ 0 scan positions, got {halo}")
    halo = min(max(halo, needs.halo), max(geometry.scan_shape))  # more adds nothing (clipped or wrapped) but memory
    if integration not in ("auto", "tile", "global"):
        raise ValueError(f"integration must be 'auto', 'tile' or 'global', got {integration!r}")
    if integration == "global" and method.kind != "field":
        raise ValueError(f"integration='global' needs a field method (FlowTIE, TIE), not {method.name!r}")
    sized = None  # the halo an automatic tile was sized for
    if isinstance(tile_size, str) and tile_size == "auto":
        tile_size = None
        # a reduction's tiles need no halo and merge exactly: split even a small scan, a tile per worker thread
        if st.intensity.nbytes > WHOLE_SCAN_BYTES or method.kind == "reduce":
            field_path = method.kind == "field" and integration != "tile" and needs.field_halo is not None
            sized = 0 if method.kind == "reduce" else (needs.field_halo if field_path else halo)
            tile_size, attrs["tile_reason"] = auto_tiles(st, geometry, needs, method, sized, client, cache=cache)
    if isinstance(tile_size, int):
        tile_size = (tile_size, tile_size)
    tiles = plan_tiles(geometry.scan_shape, tile_size, 0 if method.kind == "reduce" else halo, periodic=periodic)
    use_global = method.kind == "field" and (integration == "global" or (integration == "auto" and len(tiles) > 1))
    field_bytes = 2 * geometry.scan_shape[0] * geometry.scan_shape[1] * geometry.detector_shape[0] * \
        geometry.detector_shape[1] * 4
    spill_in = _spill_folder(scratch, field_bytes, cache, client) if use_global else None
    memory = _memory_of(client) if use_global and integration == "auto" and spill_in is None else float("inf")
    if field_bytes > 0.5 * memory:
        use_global = False  # the whole scan's field (held in the workers' memory) would not fit: solve per tile
        attrs["integration_reason"] = (f"the whole scan's field ({field_bytes / 2**30:.1f} GiB) is over half the "
                                       f"memory of the workers ({memory / 2**30:.1f} GiB): solved "
                                       "within each tile (--integration global forces the exact path)")
    if use_global and needs.field_halo is not None and needs.field_halo != halo:
        halo = min(needs.field_halo, max(geometry.scan_shape))  # e.g. TIE's pointwise field: no overlap to read
        tiles = plan_tiles(geometry.scan_shape, tile_size, halo, periodic=periodic)
    elif sized is not None and method.kind != "reduce" and sized != halo and len(tiles) > 1:
        # sized for the global path, solved per tile after all (for want of memory): sized again for the halo
        tile_size, attrs["tile_reason"] = auto_tiles(st, geometry, needs, method, halo, client, cache=cache)
        tiles = plan_tiles(geometry.scan_shape, tile_size, halo, periodic=periodic)
    done = set()
    if cache is not None:
        os.makedirs(cache, exist_ok=True)
        done = {n[:-4] for n in os.listdir(cache) if n.endswith(".npz") and readable(os.path.join(cache, n))}
    token = run_token(st.path, tiles, periodic, method, geometry)
    if method.kind == "reduce":
        names = [tile_name("reduce", t) for t in tiles]
        task, load = dask.delayed(reduce_task, pure=True), dask.delayed(load_reduction, pure=True)
        geo = geometry  # embedded in each task: no separate key pulling every tile to the worker holding it
        parts = [load(os.path.join(cache, f"{n}.npz")) if n in done else
                 task(handle, geo, t, method=method, device=device, cache=cache, name=n, bright_field=bf,
                      defocus=needs.defocus, dask_key_name=f"{method.name}-{n}-{token}") for t, n in zip(tiles, names)]
        pieces = compute(*parts, client=client, progress=progress, label=method.name)
        merged, report = _merge_reductions(pieces, geometry.scan_shape)
        phase, amplitude, ill, pixel, origin = method.finalize(merged, geometry, periodic=periodic)
        check_phase(phase, what=f"the {method.name} phase of {st.path}")
        attrs.update(integration="reduce", grid="scan" if np.allclose(pixel, geometry.scan_step) else "object")
    else:
        shape, origin = geometry.object_grid(periodic=periodic)
        workspace = None
        try:
            if use_global:
                if spill_in is not None:
                    workspace = _new_scratch(spill_in, sweep=spill_in == cache)
                parts = global_parts(st, handle, geometry, tiles, periodic=periodic, method=method, device=device,
                                     cache=cache, done=done, keep_fields=keep_fields, bright_field=bf,
                                     scratch=None if workspace is None else os.path.join(workspace, "global"))
                attrs["transpose"] = "memory" if workspace is None else "files"
                names = [tile_name("project", t) for t in tiles]
                attrs["fields_reused"] = sum(tile_name("field", t) in done for t in tiles)
            else:
                task, load = dask.delayed(tile_task, pure=True), dask.delayed(load_partial, pure=True)
                geo = geometry  # embedded in each task: no separate key pulling every tile to the worker holding it
                names = [tile_name("tile", t) for t in tiles]
                parts = [load(os.path.join(cache, f"{n}.npz")) if n in done else
                         task(handle, geo, t, method=method, periodic=periodic, device=device, cache=cache, name=n,
                              bright_field=bf, dask_key_name=f"{method.name}-{n}-{token}")
                         for t, n in zip(tiles, names)]
            # tree reduction: groups of 8 partials into full-size sums, then a final sum
            acc = dask.delayed(accumulate, pure=True)
            while len(parts) > 1:
                parts = [acc(shape, *parts[i:i + 8]) for i in range(0, len(parts), 8)]
            (num, ill, report), = compute(acc(shape, parts[0]), client=client, progress=progress, label=method.name)
        finally:
            if workspace is not None:
                shutil.rmtree(workspace, ignore_errors=True)
        obj = divide_illumination(num, ill, eps=eps)
        phase, amplitude = _read_out(obj, ill, periodic=periodic, what=f"the {method.name} phase of {st.path}")
        pixel = geometry.pixel
        attrs.update(integration="global" if use_global else "tile", eps=eps, grid="object")
    reused = sum(n in done for n in names)
    return _result(st, geometry, phase, amplitude, ill, pixel, origin, periodic, attrs, report, start=start,
                   tile_size=list(tile_size) if tile_size else None, halo=halo, n_tiles=len(tiles), reused=reused,
                   computed=len(names) - reused)


def _spill_folder(scratch, field_bytes: int, cache, client) -> str | None:
    """Where the global path's scratch folder goes (None: the field stays in memory); see :func:`reconstruct`.

    "auto" takes files above :data:`SPILL_BYTES` in ``cache``, or in the system's temporary folder for runs on
    this machine only (a cluster elsewhere may not see it: there the field stays in memory), and only where the
    files fit (the field and the phase: 1.5× the field's bytes)."""
    if scratch is None:
        return None
    need = 1.5 * field_bytes
    if isinstance(scratch, str) and scratch == "auto":
        if field_bytes <= SPILL_BYTES:
            return None
        folder = cache if cache is not None else (tempfile.gettempdir() if _on_this_machine(client) else None)
        return folder if folder is not None and _free_bytes(folder) > 1.1 * need else None
    folder = os.path.abspath(os.fspath(scratch))
    free = _free_bytes(folder)
    if free < need:
        raise ValueError(f"scratch {folder} has {free / 2**30:.1f} GiB free and the run's files need "
                         f"{need / 2**30:.1f} GiB: give a folder with more room, or keep the field in memory "
                         "(scratch=None, --scratch memory)")
    return folder


def _on_this_machine(client) -> bool:
    """In-process runs and local clusters (LocalCluster, dask-cuda's LocalCUDACluster) share this machine's disk."""
    if client is None or isinstance(client, str):
        return True
    try:
        from distributed import LocalCluster
    except ImportError:  # pragma: no cover - distributed is a dependency
        return False
    return isinstance(getattr(client, "cluster", None), LocalCluster)


def _free_bytes(folder: str) -> float:
    """Free bytes on the disk of ``folder`` (or of its nearest existing parent)."""
    path = os.path.abspath(folder)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return float(shutil.disk_usage(path).free)


def _new_scratch(folder: str, *, sweep: bool) -> str:
    """A new hidden scratch folder in ``folder`` (absolute). With ``sweep`` (``folder`` is this output's own resume
    folder), those a killed run left there are removed first."""
    os.makedirs(folder, exist_ok=True)
    if sweep:
        for name in os.listdir(folder):
            if name.startswith(SCRATCH_PREFIX):
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    return os.path.abspath(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=folder))


def _read_out(obj, ill, *, periodic: bool, what: str):
    """Phase (checked, unwrapped; rad) and amplitude of a complex object on the object grid, (Nx, Ny) each.

    Only the lit pixels (illumination above 5 % of its maximum) are checked; where it is not periodic,
    the unlit border is masked when unwrapping."""
    lit = ill > 0.05 * ill.max() if np.isfinite(ill).all() and ill.max() > 0 else np.ones(ill.shape, bool)
    phase = np.angle(obj)
    check_phase(phase, valid=lit, what=what)
    phase = np.where(np.isfinite(phase), phase, 0.0)  # only unlit pixels can be non-finite here
    phase = unwrap(phase, periodic=periodic, mask=None if periodic else ~lit)
    return phase, np.abs(obj).astype(np.float64)


def assumptions(metadata, path: str) -> tuple[str, str] | None:
    """What a run assumes about a store without calibrations: (level, one line), or None when it has them.

    A simulated store (``provenance["simulator"]``) gets a note; any other store (data from a microscope) a
    warning that names ``flowtie-dask calibrate``."""
    if metadata.calibration:
        return None
    line = ("no calibration recorded: the three scans are taken as registered, the beam centre and the detector "
            "orientation as stored")
    if "simulator" in metadata.provenance:
        return "note", line + " (a simulation)"
    return "warning", line + f"; estimate them from the data first: flowtie-dask calibrate {path}"


def _result(st, geometry, phase, amplitude, ill, pixel, origin, periodic, attrs, report, *, start, tile_size, halo,
            n_tiles, reused, computed) -> ReconstructionResult:
    """The result with the runner's attributes (tiling, timing, provenance, value repairs, assumptions)."""
    (r0, c0), (sx, sy) = geometry.scan_offset, geometry.scan_step
    origin = (float(origin[0]) + r0 * sx, float(origin[1]) + c0 * sy)  # relative to the store's first position
    rx, ry = geometry.scan_shape
    attrs.update({
        # the common area of drifted scans, when it is not the whole scan (store indices, end exclusive)
        "scan_window": [[r0, r0 + rx], [c0, c0 + ry]] if geometry.store_scan_shape else None,
        "assumed": assumptions(st.metadata, st.path),
        "scan_drift_A": [list(d) for d in st.metadata.scan_drift],
        # the detector's turn taken by the windows, not by resampling the patterns (degrees; 0: none or resampled)
        "window_rotation_deg": float(geometry.window_rotation),
        # the low-pass over the scan axes applied when reading (1/Å; 0: none)
        "scan_band_limit_invA": float(geometry.scan_band_limit),
        "tile_size": tile_size,
        "halo": halo,
        "n_tiles": n_tiles,
        "seconds": time.perf_counter() - start,
        "source": st.path,
        "flowtie_dask_version": __version__,
        "scan_metadata": {k: v for k, v in st.metadata.to_attrs().items() if k != "provenance"},
        "tiles_reused": reused,
        "tiles_computed": computed,
        "data_repairs": report.as_attrs(),
        "data_repairs_summary": report.summary(),
    })
    attrs.setdefault("fields_reused", None)
    attrs.setdefault("integration_reason", None)
    attrs.setdefault("tile_reason", None)
    return ReconstructionResult(phase=phase, amplitude=amplitude, illumination=ill, pixel_size=pixel,
                                origin=origin, periodic=periodic, attrs=attrs)


def _merge_reductions(pieces, scan_shape):
    """Place each tile's reduction arrays (..., tx, ty) into whole-scan arrays (..., Rx, Ry)."""
    merged: dict = {}
    report = BlockReport()
    for (x0, y0), arrays, r in pieces:
        for key, a in arrays.items():
            if key not in merged:
                merged[key] = np.zeros(a.shape[:-2] + tuple(scan_shape), dtype=a.dtype)
            merged[key][..., x0:x0 + a.shape[-2], y0:y0 + a.shape[-1]] = a
        report = report.merge(r)
    return merged, report

"""A 4D-STEM defocus series of a crystal: plan once, simulate scan blocks anywhere, write a store.

:func:`plan_simulation` (:mod:`.planning`) builds everything shared by all scan positions (supercell, potential
slices, transmission functions, probes, propagator, metadata, truth) from :class:`SimulationParameters`
(:mod:`.parameters`); :func:`simulate_block` (:mod:`.block`) is the per-block computation (NumPy or CuPy) that
Dask maps over scan chunks in :func:`simulate_series`; :func:`simulate_to_store` writes the scan store with its
truth. Chunking never changes the result: frozen-phonon configurations are drawn once per plan and shot noise is
seeded per scan position. Every name stays importable from here.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import numpy as np

from ..cluster import compute
from ..store import default_chunks, write_scan_store, write_truth
from .block import simulate_block
from .parameters import SimulationParameters
from .planning import SimulationPlan, plan_simulation

__all__ = [
    "SimulationParameters",
    "SimulationPlan",
    "plan_simulation",
    "simulate_block",
    "simulate_series",
    "simulate_to_store",
]


def _block_task(plan, xs, ys):
    return simulate_block(plan, xs, ys)


def simulate_series(plan: SimulationPlan, *, chunks: tuple[int, int] | None = None):
    """Lazy Dask arrays of the whole series, one task per scan block.

    Parameters
    ----------
    plan : SimulationPlan
    chunks : (cx, cy), optional
        Scan positions per block (default: :func:`flowtie_dask.store.default_chunks`).

    Returns
    -------
    intensity : dask.array.Array, shape (3, Rx, Ry, Qx, Qy), float32
        Chunks (3, cx, cy, Qx, Qy).
    probe_frame_phase : dask.array.Array, shape (Rx, Ry, Qx, Qy), float32, or None
        Computed by the same tasks as ``intensity`` (no work is repeated when both are stored).
    """
    import dask
    import dask.array as da

    rx, ry = plan.scan_shape
    qx, qy = plan.detector_shape
    cx, cy = chunks if chunks else default_chunks(plan.scan_shape, plan.detector_shape)
    plan_key = dask.delayed(plan, pure=True)
    rows_i, rows_p = [], []
    for x0 in range(0, rx, cx):
        row_i, row_p = [], []
        for y0 in range(0, ry, cy):
            xs, ys = slice(x0, min(x0 + cx, rx)), slice(y0, min(y0 + cy, ry))
            bx, by = xs.stop - xs.start, ys.stop - ys.start
            task = dask.delayed(_block_task, nout=2, pure=True)(plan_key, xs, ys)
            row_i.append(da.from_delayed(task[0], shape=(3, bx, by, qx, qy), dtype=np.float32))
            if plan.params.probe_frame:
                row_p.append(da.from_delayed(task[1], shape=(bx, by, qx, qy), dtype=np.float32))
        rows_i.append(row_i)
        rows_p.append(row_p)
    intensity = da.concatenate([da.concatenate(r, axis=2) for r in rows_i], axis=1)
    phase = None
    if plan.params.probe_frame:
        phase = da.concatenate([da.concatenate(r, axis=1) for r in rows_p], axis=0)
    return intensity, phase


def simulate_to_store(
    params: SimulationParameters,
    out: str,
    *,
    chunks: tuple[int, int] | None = None,
    client: Any = None,
    progress: bool = True,
    overwrite: bool = False,
) -> str:
    """Simulate a defocus series and write it, with truth, as a scan store.

    Parameters
    ----------
    params : SimulationParameters
    out : str
        Destination folder (``*.zarr``); written atomically (see
        :func:`flowtie_dask.store.write_scan_store`).
    chunks : (cx, cy), optional
        Scan positions per chunk of the store and per Dask task.
    client : distributed.Client, optional
        Runs the tasks on this cluster; None uses in-process threads.
    progress : bool
        Progress bar on stderr.
    overwrite : bool
        Replace an existing store.

    Returns
    -------
    str
        The absolute path of the store.
    """
    plan = plan_simulation(params)
    chunks = tuple(chunks) if chunks else default_chunks(plan.scan_shape, plan.detector_shape)
    intensity, phase = simulate_series(plan, chunks=chunks)
    import dask.array as da

    with write_scan_store(out, plan.metadata, scan_shape=plan.scan_shape, detector_shape=plan.detector_shape,
                          chunks=chunks, overwrite=overwrite) as group:
        truth = write_truth(
            group, plan.projected_phase, pixel_size=plan.sampling, origin=(0.0, 0.0),
            probe_frame_chunks=chunks if params.probe_frame else None,
            attrs={"thickness_A": plan.thickness, "material": plan.name, "periodic_cell_A": list(plan.cell)},
        )
        sources, targets = [intensity], [group["intensity"]]
        if phase is not None:
            sources.append(phase)
            targets.append(truth["probe_frame_phase"])
        stored = da.store(sources, targets, lock=False, compute=False)
        compute(stored, client=client, progress=progress, label="simulate")
        group.attrs["provenance"] = {**plan.metadata.provenance, "parameters": _json_params(params)}
    return os.path.abspath(out)


def _json_params(params: SimulationParameters) -> dict:
    d = asdict(params)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


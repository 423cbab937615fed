"""Training sets: many seeded random-cubic structures simulated into a collection of scan stores, spread
over Dask workers (one task per structure).

Layout::

    train/
      collection.json          {"schema": "flowtie-dask/collection", "members": [{"path", "material", ...}]}
      s0000.zarr, s0001.zarr … scan stores with truth/probe_frame_phase
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any

import numpy as np

from ..atomic import check_output
from ..cluster import compute
from ..resume import jsonable, resume_workspace
from ..store import ScanStoreError, open_scan_store
from .optics_range import draw_optics, load_optics_range
from .series import SimulationParameters, simulate_to_store

__all__ = ["COLLECTION_SCHEMA", "simulate_collection", "open_collection"]

COLLECTION_SCHEMA = "flowtie-dask/collection"


def _entry(path: str, params: SimulationParameters, drawn) -> dict:
    prov = open_scan_store(path).metadata.provenance
    entry = {"path": os.path.basename(path), "material": prov["material"], "thickness_A": prov["thickness_A"],
             "seed": params.seed}
    return entry if drawn is None else {**entry, "optics": drawn}


def _member(params: SimulationParameters, path: str, drawn=None) -> dict:
    simulate_to_store(params, path, progress=False, overwrite=True)  # our own work folder: clears a dead run's partial
    return _entry(path, params, drawn)


def _finished_member(path: str, params: SimulationParameters, drawn=None) -> dict | None:
    """The index entry of a member kept from an interrupted run, or None when it is absent or incomplete."""
    if not os.path.isdir(path):
        return None
    try:
        return _entry(path, params, drawn)
    except ScanStoreError:
        return None


def simulate_collection(params: SimulationParameters, out: str, *, count: int, thickness_cells_range=None,
                        client: Any = None, progress: bool = True, overwrite: bool = False,
                        resume: bool = False, inputs=(), optics_range=None) -> str:
    """Simulate ``count`` structures (seeds ``params.seed`` … ``params.seed + count − 1``) into a collection.

    Parameters
    ----------
    params : SimulationParameters
        Shared settings; ``material`` is usually ``"random-cubic"`` (the seed picks the structure).
        ``probe_frame`` is forced on (training truth).
    out : str
        Collection folder; written atomically (members appear together with ``collection.json``).
    count : int
        Number of structures.
    thickness_cells_range : (int, int), optional
        Draw each member's thickness in cells uniformly from this inclusive range (seeded).
    client : distributed.Client, optional
        One task per structure on this cluster; None uses in-process threads.
    overwrite : bool
        Replace an existing collection (at the end, by a rename) and discard the members of an interrupted run.
    resume : bool
        Keep the members an interrupted run with the same parameters finished (each member store is written
        atomically, so a kept one is complete); refused when the parameters differ.
    inputs : iterable of paths
        Files the output must not replace (e.g. the structure file).
    optics_range : dict, str or None
        Draw each member's optics, thickness and sampling from these ranges
        (:func:`~flowtie_dask.simulate.optics_range.draw_optics`; a range file path, ``"default"`` or a dict);
        ``thickness_cells_range`` is then ignored. The index records the ranges and each member's draw.

    Returns
    -------
    str
        Absolute path of the collection. ``simulate_collection.last_reused`` holds the number of members
        kept from an interrupted run.
    """
    import dask

    if count < 1:
        raise ValueError(f"--count must be ≥ 1, got {count}")
    from .. import __version__

    out = check_output(out, overwrite=overwrite, inputs=inputs)
    rng = np.random.default_rng([params.seed, 7])
    ranges = None if optics_range is None else load_optics_range(optics_range)
    record = jsonable({"kind": "collection", "count": count, "thickness_cells_range": thickness_cells_range,
                       "parameters": params.__dict__, "flowtie_dask_version": __version__, "optics_range": ranges})
    with resume_workspace(out, record=record, resume=resume, overwrite=overwrite, inputs=inputs,
                          publish_folder=True) as tmp:
        tasks, members, reused = [], [None] * count, 0
        for i in range(count):
            p, drawn = replace(params, seed=params.seed + i, probe_frame=True), None
            if ranges is not None:
                p, drawn = draw_optics(params, ranges, params.seed + i)
            elif thickness_cells_range is not None:
                lo, hi = thickness_cells_range
                p = replace(p, thickness_cells=int(rng.integers(lo, hi + 1)), thickness=None)
            path = os.path.join(tmp, f"s{i:04d}.zarr")
            kept = _finished_member(path, p, drawn) if resume else None
            if kept is not None:
                members[i] = kept
                reused += 1
            else:
                tasks.append((i, dask.delayed(_member, pure=True)(p, path, drawn, dask_key_name=f"structure-{i:04d}-"
                                                                  f"{dask.base.tokenize(p, path)[:8]}")))
        done = compute(*[t for _, t in tasks], client=client, progress=progress, label="simulate") if tasks else ()
        for (i, _), m in zip(tasks, done):
            members[i] = m
        index = {"schema": COLLECTION_SCHEMA, "schema_version": 1, "count": count, "members": members,
                 "optics_range": ranges,
                 "parameters": {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.__dict__.items()}}
        with open(os.path.join(tmp, "collection.json"), "w") as f:
            json.dump(index, f, indent=1)
    simulate_collection.last_reused = reused
    return out


def open_collection(path: str) -> list[str]:
    """Member store paths of a collection (or ``[path]`` when ``path`` is a single scan store).

    Raises
    ------
    ValueError
        When ``path`` is neither.
    """
    index = os.path.join(path, "collection.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8", errors="replace") as f:
            text = f.read()
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{index!r} is not valid JSON (line {exc.lineno} column {exc.colno}): {exc.msg}; "
                             "re-create the collection with 'flowtie-dask simulate random-cubic --count N'") from None
        if not isinstance(meta, dict) or meta.get("schema") != COLLECTION_SCHEMA:
            raise ValueError(f"{index!r} is not a flowtie-dask collection index")
        members = meta.get("members")
        if not isinstance(members, list) or not all(isinstance(m, dict) and isinstance(m.get("path"), str)
                                                    for m in members):
            raise ValueError(f"{index!r} has no valid 'members' list (each with a 'path'); re-create the collection")
        return [os.path.join(path, m["path"]) for m in members]
    if os.path.isfile(os.path.join(path, "zarr.json")):
        return [path]
    raise ValueError(f"{path!r} is neither a scan store nor a collection from 'simulate --count'")

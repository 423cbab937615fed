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

from ..atomic import atomic_path, check_output
from .series import SimulationParameters, simulate_to_store

__all__ = ["COLLECTION_SCHEMA", "simulate_collection", "open_collection"]

COLLECTION_SCHEMA = "flowtie-dask/collection"


def _member(params: SimulationParameters, path: str) -> dict:
    from ..store import open_scan_store

    simulate_to_store(params, path, progress=False)
    prov = open_scan_store(path).metadata.provenance
    return {"path": os.path.basename(path), "material": prov["material"], "thickness_A": prov["thickness_A"],
            "seed": params.seed}


def simulate_collection(params: SimulationParameters, out: str, *, count: int, thickness_cells_range=None,
                        client: Any = None, progress: bool = True, overwrite: bool = False) -> str:
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

    Returns
    -------
    str
        Absolute path of the collection.
    """
    import dask

    from ..cluster import compute

    if count < 1:
        raise ValueError(f"--count must be ≥ 1, got {count}")
    out = check_output(out, overwrite=overwrite)
    rng = np.random.default_rng([params.seed, 7])
    with atomic_path(out, overwrite=overwrite) as tmp:
        os.makedirs(tmp)
        tasks = []
        for i in range(count):
            p = replace(params, seed=params.seed + i, probe_frame=True)
            if thickness_cells_range is not None:
                lo, hi = thickness_cells_range
                p = replace(p, thickness_cells=int(rng.integers(lo, hi + 1)), thickness=None)
            tasks.append(dask.delayed(_member, pure=True)(p, os.path.join(tmp, f"s{i:04d}.zarr")))
        members = list(compute(*tasks, client=client, progress=progress))
        index = {"schema": COLLECTION_SCHEMA, "schema_version": 1, "count": count, "members": members,
                 "parameters": {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.__dict__.items()}}
        with open(os.path.join(tmp, "collection.json"), "w") as f:
            json.dump(index, f, indent=1)
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

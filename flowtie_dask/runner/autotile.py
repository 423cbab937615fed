"""The runner's automatic tiles (``tile_size="auto"``): sized by bytes for the run's workers
(:func:`~.tiles.auto_tile_size`), and kept in the resume cache so that a resumed run cuts the scan as the run it
resumes did, whatever workers it has now (its finished pieces are named by their tiles' first positions only)."""

from __future__ import annotations

import json
import os

from ..atomic import write_file_atomic
from .tiles import TILE_BYTES, auto_tile_size
from .workers import _threads_of

__all__ = ["CHOICE_FILE", "auto_tiles"]

#: The file in the resume cache that records an automatic choice.
CHOICE_FILE = "auto-tiles.json"


def _sized(st, geometry, needs, method, halo: int, client) -> tuple[tuple[int, int], str]:
    """:func:`~.tiles.auto_tile_size` for the halo the tiles will be read with, the scans the method reads, the
    store's chunks, every worker thread a tile, and a budget of :data:`~.tiles.TILE_BYTES` or a quarter of a
    worker thread's memory where that is less."""
    threads, memory = _threads_of(client)
    scans = len(needs.defocus) if method.kind == "reduce" and needs.defocus else 3
    chunks = tuple(int(c) for c in st.intensity.chunks[1:3])
    return auto_tile_size(geometry.scan_shape, geometry.detector_shape, halo=halo, scans=scans, align=max(chunks),
                          budget=int(min(TILE_BYTES, memory / 4)), parts=threads)


def auto_tiles(st, geometry, needs, method, halo: int, client, *, cache: str | None = None):
    """The automatic tile of a run: (tile (tx, ty), reason), the tile sized for ``halo`` scan positions read around
    it, or, when the resume ``cache`` holds the choice of an earlier run for the same method and halo, that one.

    The choice is written into ``cache`` (``CHOICE_FILE``, atomically) before any piece is computed."""
    key = f"{method.name}:{halo}"
    path = None if cache is None else os.path.join(cache, CHOICE_FILE)
    record = {}
    if path is not None and os.path.exists(path):
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            record = {}  # a damaged record (never half-written: atomic): choose again
    if key in record:
        tile, reason = tuple(int(v) for v in record[key]["tile"]), record[key]["reason"]
        return tile, f"{reason} (the choice of the run this one resumes)"
    tile, reason = _sized(st, geometry, needs, method, halo, client)
    if path is not None:
        os.makedirs(cache, exist_ok=True)
        record[key] = {"tile": list(tile), "reason": reason}
        write_file_atomic(path, json.dumps(record).encode())
    return tile, reason

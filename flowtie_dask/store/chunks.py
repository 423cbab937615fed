"""Chunks on disk: keys, grid positions, presence, and the messages that name them.

Helpers shared by the scan-store writer and reader (:mod:`.layout`) and the integrity checks (:mod:`.integrity`):
the store key of a chunk in the array's own encoding, the scan positions it holds (for messages), which chunks are
stored (one directory walk, or one stat per chunk, no data read), filling the ones a writer left out, and a short
description of why a chunk does not decode. All private to the ``flowtie_dask.store`` package.
"""

from __future__ import annotations

import math
import os

import numpy as np

_AXIS_NAMES = {5: ("defocus", "Rx", "Ry", "Qx", "Qy"), 4: ("Rx", "Ry", "Qx", "Qy"), 2: ("x", "y")}
_FIX = ("copy it again from the source or re-import it; 'flowtie-dask info --check {path}' lists every bad chunk")


def _array_name(array) -> str:
    """The array's name inside its store ('intensity', 'truth/probe_frame_phase'), for messages."""
    if array.path:
        return str(array.path).strip("/")
    root = getattr(array.store, "root", None)
    return os.path.basename(os.fspath(root)) if root is not None else "intensity"


def _store_path_of(array) -> str:
    """The folder of the scan store holding ``array`` (for messages), or the store's description."""
    root = getattr(array.store, "root", None)
    if root is None:
        return str(array.store)
    root = os.fspath(root)
    if not array.path:  # opened as PATH/intensity
        return os.path.dirname(root.rstrip(os.sep)) or root
    return root


def _object_shape(array) -> tuple[int, ...]:
    """Shape of one stored object (a shard when the array is sharded, else a chunk)."""
    return tuple(int(v) for v in (getattr(array, "shards", None) or array.chunks))


def _chunk_grid(array) -> tuple[int, ...]:
    return tuple(max(1, math.ceil(n / c)) for n, c in zip(array.shape, _object_shape(array)))


def _chunk_key(array, coords) -> str:
    """The store key of the chunk at grid ``coords``, relative to the array, in the array's own encoding."""
    return array.metadata.encode_chunk_key(tuple(int(c) for c in coords))


def _chunk_region(array, coords) -> tuple[slice, ...]:
    cs = _object_shape(array)
    return tuple(slice(c * s, min((c + 1) * s, n)) for c, s, n in zip(coords, cs, array.shape))


def _chunk_where(array, coords) -> str:
    """The scan positions a chunk holds, e.g. 'defocus index 1, Rx 4–7, Ry 0–3'."""
    names = tuple(getattr(array.metadata, "dimension_names", None) or ()) or _AXIS_NAMES.get(array.ndim, ())
    if len(names) != array.ndim:
        names = tuple(f"axis {i}" for i in range(array.ndim))
    parts = []
    for name, sl, n in zip(names, _chunk_region(array, coords), array.shape):
        lo, hi = sl.start, sl.stop - 1
        span = f"{lo}" if lo == hi else f"{lo}–{hi}"
        if name == "defocus":
            parts.append(f"defocus index {span}" if lo == hi else f"defocus indices {span}")
        elif name in ("Rx", "Ry", "x", "y") or (lo, hi) != (0, n - 1):
            parts.append(f"{name} {span}")
    return ", ".join(parts)


def _stored_keys(array) -> set[str] | None:
    """Keys (relative to the array) of every object stored under the array: one directory walk, no data read.

    None when the store cannot be listed.
    """
    root = getattr(array.store, "root", None)
    if root is not None:
        base = os.path.join(os.fspath(root), *str(array.path).split("/")) if array.path else os.fspath(root)
        keys = set()
        for d, _, files in os.walk(base):
            rel = os.path.relpath(d, base)
            prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            keys.update(prefix + f for f in files)
        return keys
    try:  # another kind of store: its list API
        from zarr.core.sync import sync

        prefix = f"{array.path}/" if array.path else ""

        async def collect():
            return [k async for k in array.store.list_prefix(prefix)]

        return {k[len(prefix):] for k in sync(collect())}
    except Exception:  # pragma: no cover - exotic stores
        return None


def _missing_chunks(array) -> tuple[list[tuple[int, ...]], int]:
    """(grid coordinates of every chunk not on disk, number of chunks). Empty when the store cannot be listed."""
    import itertools

    grid = _chunk_grid(array)
    total = math.prod(grid)
    present = _stored_keys(array)
    if present is None:
        return [], total
    missing = [c for c in itertools.product(*(range(g) for g in grid)) if _chunk_key(array, c) not in present]
    return missing, total


def _fill_missing_chunks(array) -> None:
    """Write the fill value into every chunk not on disk (so that a missing chunk always means a lost one)."""
    missing, _ = _missing_chunks(array)
    if not missing:
        return
    full = array.with_config({"write_empty_chunks": True})
    for coords in missing:
        region = _chunk_region(array, coords)
        full[region] = np.full(tuple(sl.stop - sl.start for sl in region), array.fill_value, dtype=array.dtype)


def _decode_problem(exc: BaseException) -> str:
    """A short description of why a chunk does not decode."""
    text = (str(exc).splitlines() or [""])[0].strip()
    if "checksum" in text.lower():
        return "corrupt (CRC-32C checksum mismatch)"
    if "blosc" in text.lower() or "decompress" in text.lower():
        return f"corrupt (does not decompress: {text[:100]})"
    if "reshape" in text.lower() or "size" in text.lower():
        return f"corrupt (decodes to the wrong size: {text[:100]})"
    return f"unreadable ({type(exc).__name__}: {text[:100]})"


def _as_index(idx, n: int):
    """A slice for a step-1 contiguous range, else an integer array (for orthogonal indexing)."""
    if isinstance(idx, slice):
        return idx
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    if idx.size and np.all(np.diff(idx) == 1) and idx[0] >= 0:
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def _touched(sel, n: int, size: int) -> list[int]:
    """Chunk indices along one axis touched by a slice or an index array."""
    pos = np.arange(n)[sel] if isinstance(sel, slice) else np.asarray(sel) % n
    return sorted({int(p) // size for p in np.atleast_1d(pos)})


def _on_disk(array, coords_list) -> list[bool]:
    """Whether each chunk is stored (one stat per chunk on a local store; True where the store can't tell)."""
    root = getattr(array.store, "root", None)
    if root is None:
        return [True] * len(coords_list)
    base = os.path.join(os.fspath(root), *str(array.path).split("/")) if array.path else os.fspath(root)
    return [os.path.isfile(os.path.join(base, *_chunk_key(array, c).split("/"))) for c in coords_list]

"""Integrity of a scan store: reading blocks that name any bad chunk, and checking every chunk of a store.

:func:`read_block` is the picklable reader the Dask tasks use: a missing chunk (which Zarr would read as zeros) or
one that fails to decode (CRC-32C, Blosc, truncated file) is refused with a one-line
:class:`~flowtie_dask.store.ScanStoreError` naming the chunk key and the scan positions it holds.
:func:`check_scan_store` (``flowtie-dask info --check``) reads every chunk once and lists each bad one as a
:class:`BadChunk` in a :class:`StoreCheck`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .chunks import (
    _FIX,
    _array_name,
    _as_index,
    _chunk_grid,
    _chunk_key,
    _chunk_region,
    _chunk_where,
    _decode_problem,
    _object_shape,
    _on_disk,
    _store_path_of,
    _stored_keys,
    _touched,
)
from .layout import ScanStore, _fail, _is_group, intensity_scale, open_scan_store
from .metadata import ScanStoreError

__all__ = ["read_block", "BadChunk", "StoreCheck", "check_scan_store"]


def _open_intensity(source):
    """The intensity array of ``source``: a zarr.Array, a :class:`ScanStore`, or the path of a store (or of its
    ``intensity`` array)."""
    import zarr

    if isinstance(source, ScanStore):
        return source.intensity
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            _fail(f"scan store {path!r} does not exist")
        node = zarr.open(path, mode="r")
        if _is_group(node):
            if "intensity" not in node:
                _fail(f"{path} has no 'intensity' array")
            node = node["intensity"]
            if _is_group(node):
                _fail(f"{path}: 'intensity' is a Zarr group, not an array")
        return node
    return source


def _bad_chunks_in(array, coords_list) -> list["BadChunk"]:
    """Read the given chunks one at a time; every one that is missing or does not decode."""
    present = _stored_keys(array)
    name = _array_name(array)
    bad = []
    for coords in coords_list:
        key = _chunk_key(array, coords)
        where = _chunk_where(array, coords)
        if present is not None and key not in present:
            bad.append(BadChunk(f"{name}/{key}", where, "missing", "missing"))
            continue
        try:
            array[_chunk_region(array, coords)]
        except Exception as exc:  # noqa: BLE001 - any decode failure names the chunk
            bad.append(BadChunk(f"{name}/{key}", where, _decode_problem(exc), "corrupt"))
    return bad


def read_block(source, rows, cols, *, defocus=None, dtype=np.float32, scaled: bool = True) -> np.ndarray:
    """Read ``intensity[defocus, rows, cols]`` of a scan store, naming any bad chunk.

    A plain module-level function (picklable: Dask tasks call it with the store's path). Contiguous ranges are
    read by slicing, non-contiguous or wrapped index lists (e.g. ``[14, 15, 0, 1]``) by orthogonal indexing,
    exactly like ``intensity.oindex[:, rows, cols]``. A store of counts (``flowtie-dask import`` of camera
    frames: uint16 or float32 values with a ``scale`` attribute) is returned normalised, each scan multiplied by
    its factor (:func:`intensity_scale`), so every reader sees the store's normalisation.

    Parameters
    ----------
    source : str, PathLike, zarr.Array or ScanStore
        The scan store folder (or its ``intensity`` array, opened or as a path).
    rows, cols : sequence of int or slice
        Scan positions along Rx and Ry.
    defocus : sequence of int, optional
        Defocus indices to read (default all three).
    dtype : numpy dtype
        Of the returned array (float32 by default; a floating dtype when the store records a scale).
    scaled : bool
        Apply the store's ``scale`` (default); False returns the stored values (counts).

    Returns
    -------
    ndarray, shape (D, len(rows), len(cols), Qx, Qy)
        D = 3, or ``len(defocus)``.

    Raises
    ------
    ScanStoreError
        One line naming the chunk key(s) that are missing on disk or fail to decode (CRC-32C mismatch, Blosc
        error, truncated file), the scan positions they hold, and what to do.
    """
    import itertools

    array = _open_intensity(source)
    shape = tuple(array.shape)
    sr, sc = _as_index(rows, shape[1]), _as_index(cols, shape[2])
    sd = slice(None) if defocus is None else _as_index(list(defocus), shape[0])
    cs, grid = _object_shape(array), _chunk_grid(array)
    touched = list(itertools.product(_touched(sd, shape[0], cs[0]), _touched(sr, shape[1], cs[1]),
                                     _touched(sc, shape[2], cs[2]), *(range(g) for g in grid[3:])))
    # A missing chunk reads as zeros without an error: look for the touched ones first (a stat each).
    missing = [c for c, ok in zip(touched, _on_disk(array, touched)) if not ok]
    if missing:
        _raise_bad(array, [BadChunk(f"{_array_name(array)}/{_chunk_key(array, c)}", _chunk_where(array, c),
                                    "missing", "missing") for c in missing])
    try:
        if isinstance(sr, slice) and isinstance(sc, slice) and isinstance(sd, slice):
            out = array[sd, sr, sc]
        else:
            ir = np.arange(shape[1])[sr] if isinstance(sr, slice) else sr
            ic = np.arange(shape[2])[sc] if isinstance(sc, slice) else sc
            idd = np.arange(shape[0])[sd] if isinstance(sd, slice) else sd
            out = array.oindex[idd, ir, ic]
    except Exception:  # noqa: BLE001 - find the chunk that failed, one at a time
        bad = _bad_chunks_in(array, touched)
        if not bad:
            raise
        _raise_bad(array, bad)
    scale = intensity_scale(array) if scaled else None
    if scale is None:
        return np.asarray(out, dtype=dtype)
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise ValueError(f"read_block: the store holds counts with a scale; read them as floats, or with "
                         f"scaled=False as {np.dtype(dtype)}")
    out = np.asarray(out, dtype=dtype)  # a new array (the stored values are never floats of this kind) or ours
    idd = np.arange(shape[0])[sd] if isinstance(sd, slice) else np.asarray(sd)
    out *= scale[idd].astype(out.dtype).reshape((-1,) + (1,) * (out.ndim - 1))
    return out


def _raise_bad(array, bad: list["BadChunk"]):
    path = _store_path_of(array)
    first = bad[0]
    more = f"; {len(bad) - 1} more bad: " + ", ".join(b.key for b in bad[1:4]) + (" …" if len(bad) > 4 else "") \
        if len(bad) > 1 else ""
    raise ScanStoreError(f"scan store {path!r} is damaged: chunk {first.key} ({first.where}) is {first.problem}"
                         f"{more}; " + _FIX.format(path=path)) from None


@dataclass(frozen=True)
class BadChunk:
    """One bad chunk found by :func:`read_block` or :func:`check_scan_store`.

    Attributes
    ----------
    key : str
        Store key, e.g. ``"intensity/c/1/2/0/0/0"``.
    where : str
        The positions it holds, e.g. ``"defocus index 1, Rx 8–11, Ry 0–3"``.
    problem : str
        ``"missing"``, ``"corrupt (…)"``, ``"5 non-finite values (NaN/Inf), first at …"``.
    kind : str
        ``"missing"``, ``"corrupt"`` or ``"non-finite"``.
    """

    key: str
    where: str
    problem: str
    kind: str

    def __str__(self) -> str:
        return f"{self.key} ({self.where}): {self.problem}"


@dataclass
class StoreCheck:
    """The result of :func:`check_scan_store`.

    Attributes
    ----------
    path : str
    chunks : int
        Chunks checked (intensity and truth arrays).
    bad : list of BadChunk
    """

    path: str
    chunks: int = 0
    bad: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad

    def summary(self) -> str:
        """One line: ``all M chunks present and intact`` or ``N of M chunks bad: …``."""
        if self.ok:
            return f"all {self.chunks} chunks present and intact"
        kinds = {}
        for b in self.bad:
            kinds[b.kind] = kinds.get(b.kind, 0) + 1
        counts = ", ".join(f"{n} {k}" for k, n in kinds.items())
        return (f"{len(self.bad)} of {self.chunks} chunks bad in {self.path!r} ({counts}), first {self.bad[0]}; "
                "copy the store again from the source or re-import it")


def check_scan_store(source, *, on_bad=None) -> StoreCheck:
    """Verify every chunk of a scan store: present on disk, decodes (CRC-32C, Blosc), right shape, finite.

    Reads one chunk at a time (memory bounded by one chunk). Checks ``intensity`` and the ``truth/`` arrays.
    Missing chunks are listed rather than refused (the store is opened with ``check_chunks=False``).

    Parameters
    ----------
    source : str, PathLike or ScanStore
    on_bad : callable, optional
        Called with each :class:`BadChunk` as it is found (``info --check`` prints them).

    Returns
    -------
    StoreCheck
    """
    import itertools

    st = source if isinstance(source, ScanStore) else open_scan_store(source, check_chunks=False)
    arrays = [st.intensity]
    if st.truth is not None:
        arrays += [st.truth[n] for n in ("projected_phase", "probe_frame_phase") if n in st.truth]
    report = StoreCheck(path=st.path)
    for array in arrays:
        present = _stored_keys(array)
        name = _array_name(array)
        floating = np.issubdtype(array.dtype, np.floating)
        for coords in itertools.product(*(range(g) for g in _chunk_grid(array))):
            report.chunks += 1
            key, region = _chunk_key(array, coords), _chunk_region(array, coords)
            bad = None
            if present is not None and key not in present:
                bad = BadChunk(f"{name}/{key}", _chunk_where(array, coords), "missing", "missing")
            else:
                try:
                    block = np.asarray(array[region])
                except Exception as exc:  # noqa: BLE001
                    bad = BadChunk(f"{name}/{key}", _chunk_where(array, coords), _decode_problem(exc), "corrupt")
                else:
                    want = tuple(sl.stop - sl.start for sl in region)
                    if block.shape != want:
                        bad = BadChunk(f"{name}/{key}", _chunk_where(array, coords),
                                       f"corrupt (shape {block.shape}, expected {want})", "corrupt")
                    elif floating:
                        nonfinite = ~np.isfinite(block)
                        count = int(nonfinite.sum())
                        if count:
                            first = [tuple(int(i + sl.start) for i, sl in zip(ix, region))
                                     for ix in np.argwhere(nonfinite)[:3]]
                            nan = int(np.isnan(block).sum())
                            bad = BadChunk(f"{name}/{key}", _chunk_where(array, coords),
                                           f"{count} non-finite values ({nan} NaN, {count - nan} ±Inf), first at "
                                           + ", ".join(str(f) for f in first) + (" …" if count > 3 else ""),
                                           "non-finite")
            if bad is not None:
                report.bad.append(bad)
                if on_bad is not None:
                    on_bad(bad)
    return report

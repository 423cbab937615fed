"""Rewrite a scan store into another layout (codec, chunks, shards) without changing a value.

``flowtie-dask rechunk`` calls :func:`rechunk_store`. The copy is one Dask task per shard (or chunk when not
sharded), each reading the stored values of its region (counts stay counts, uint16 stays uint16) through the
checked reader and writing them whole, so concurrent tasks never share a shard. The metadata, calibration,
the counts' ``scale`` and the truth of a simulation are carried over; the new store is written atomically
(:func:`write_scan_store`) and the source is only read.
"""

from __future__ import annotations

import os

import numpy as np

from ..cluster import compute
from .integrity import read_block
from .layout import open_scan_store, write_scan_store
from .metadata import ScanStoreError, default_chunks

__all__ = ["LAYOUTS", "rechunk_store"]

#: Named layouts: (codec, shard side in scan positions or None). "fast": LZ4 with byte shuffle in chunks of
#: about 4 MiB, sharded in 128×128 positions (64 MiB–1 GiB per shard for 64²–256² detectors, float32).
LAYOUTS = {"default": ("default", None), "fast": ("fast", 128)}


def _copy_region(src: str, dst: str, rows: tuple[int, int], cols: tuple[int, int]) -> int:
    """Copy intensity[:, rows, cols] (stored values) from ``src`` to ``dst``; returns the bytes copied."""
    import zarr

    out = zarr.open_array(os.path.join(dst, "intensity"), mode="r+")
    block = read_block(src, slice(*rows), slice(*cols), dtype=out.dtype, scaled=False)
    out[:, rows[0]:rows[1], cols[0]:cols[1]] = block
    return int(block.nbytes)


def _copy_truth(src_group, dst_group) -> None:
    if "truth" not in src_group:
        return
    truth = src_group["truth"]
    out = dst_group.create_group("truth")
    out.attrs.update(dict(truth.attrs))
    for name, arr in truth.arrays():
        new = out.create_array(name, shape=arr.shape, chunks=arr.chunks, dtype=arr.dtype,
                               compressors=arr.compressors, fill_value=arr.fill_value,
                               dimension_names=arr.metadata.dimension_names,
                               config={"write_empty_chunks": True})
        new.attrs.update(dict(arr.attrs))
        step = max(1, arr.chunks[0])
        for i in range(0, arr.shape[0], step):  # chunk rows at a time: probe_frame_phase is one scan's size
            new[i:i + step] = arr[i:i + step]


def rechunk_store(src: str | os.PathLike, dst: str | os.PathLike, *, layout: str = "fast",
                  chunks: tuple[int, int] | None = None, shards: tuple[int, int] | None | str = "layout",
                  overwrite: bool = False, client=None, progress: bool = True) -> str:
    """Write the scan store ``src`` to ``dst`` in another layout; every value, attribute and the truth unchanged.

    Parameters
    ----------
    src, dst : str or PathLike
        Source store (only read) and the new store's folder.
    layout : {"default", "fast"}
        Named codec and sharding (:data:`LAYOUTS`).
    chunks : (cx, cy), optional
        Scan positions per chunk (default: about 4 MiB, :func:`~flowtie_dask.store.default_chunks`).
    shards : (sx, sy) or None, optional
        Scan positions per shard; None: unsharded; default: the layout's.
    overwrite : bool
        Replace an existing ``dst`` (never ``src``).
    client : distributed.Client, optional
        None: Dask's in-process threads.
    progress : bool

    Returns
    -------
    str
        ``dst``.
    """
    import dask
    import zarr

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    src, dst = os.path.abspath(os.fspath(src)), os.path.abspath(os.fspath(dst))
    if src == dst or dst.startswith(src + os.sep) or src.startswith(dst + os.sep):
        raise ValueError(f"the new store {dst!r} must be outside the source {src!r} and not contain it")
    st = open_scan_store(src)
    codec, side = LAYOUTS[layout]
    dtype = np.dtype(st.intensity.dtype)
    chunks = tuple(int(c) for c in chunks) if chunks else default_chunks(st.scan_shape, st.detector_shape,
                                                                          itemsize=dtype.itemsize)
    if shards == "layout":
        shards = None if side is None else (max(side // chunks[0], 1) * chunks[0], max(side // chunks[1], 1) * chunks[1])
    if min(chunks) < 1 or (shards is not None and min(shards) < 1):
        raise ValueError(f"chunks {chunks} and shards {shards} must be positive numbers of scan positions")
    source = zarr.open_group(src, mode="r")
    meta = st.metadata.replace(provenance={**st.metadata.provenance, "rechunked_from": src, "layout": layout})
    with write_scan_store(dst, meta, scan_shape=st.scan_shape, detector_shape=st.detector_shape, chunks=chunks,
                          dtype=str(dtype), overwrite=overwrite, codec=codec, shards=shards) as g:
        g["intensity"].attrs.update(dict(source["intensity"].attrs))
        _copy_truth(source, g)
        tmp = os.fspath(g.store.root)  # the hidden folder being written
        step = shards or tuple(g["intensity"].chunks[1:3])
        rx, ry = st.scan_shape
        task = dask.delayed(_copy_region, pure=False)
        parts = [task(src, tmp, (x, min(x + step[0], rx)), (y, min(y + step[1], ry)),
                      dask_key_name=f"rechunk-{x}-{y}-{os.getpid()}")
                 for x in range(0, rx, step[0]) for y in range(0, ry, step[1])]
        copied = sum(compute(*parts, client=client, progress=progress, label="rechunk"))
        if copied != st.intensity.nbytes:
            raise ScanStoreError(f"rechunk copied {copied} of {st.intensity.nbytes} bytes; the new store was not "
                                 "written")
    return dst

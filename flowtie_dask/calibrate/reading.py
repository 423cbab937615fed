"""The reductions of a scan store that calibration needs, read by blocks of scan rows (never the whole scan).

:func:`focus_reductions` gives the focus scan's mean pattern and every pattern's centre of mass (one pass over that
scan); :func:`virtual_image_stack` the virtual images of the three scans (one pass over each). Blocks are whole
chunk rows of the store, as many as fit ``block_bytes``, read through :func:`flowtie_dask.store.read_block` (a
missing or corrupt chunk is named) by a few threads (decompression releases the GIL); the reductions themselves
are the pure functions of :mod:`.virtual`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..store import ScanStore, read_block
from .virtual import VIRTUAL_IMAGES, centre_of_mass_px, detector_masks, virtual_images

__all__ = ["row_blocks", "focus_reductions", "virtual_image_stack"]

BLOCK_BYTES = 128 * 2**20


def row_blocks(store: ScanStore, *, block_bytes: int = BLOCK_BYTES) -> list[slice]:
    """Row ranges of the scan, each a whole number of chunk rows and about ``block_bytes`` of float32 or less
    (at least one chunk row)."""
    rx, ry = store.scan_shape
    qx, qy = store.detector_shape
    chunk_rows = int(store.intensity.chunks[1])
    per_chunk_row = chunk_rows * ry * qx * qy * 4
    rows = chunk_rows * max(1, int(block_bytes // max(per_chunk_row, 1)))
    return [slice(r, min(r + rows, rx)) for r in range(0, rx, rows)]


def _map_blocks(store: ScanStore, scan: int, fn, *, threads: int | None, block_bytes: int) -> list:
    """fn(patterns (nr, Ry, Qx, Qy) float32) for every row block of one scan, in row order."""
    blocks = row_blocks(store, block_bytes=block_bytes)
    threads = max(1, min(threads or min(4, os.cpu_count() or 1), len(blocks)))

    def one(rows):
        return fn(read_block(store, rows, slice(None), defocus=[scan])[0])

    if threads == 1:
        return [one(r) for r in blocks]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, blocks))


def focus_reductions(store: ScanStore, focus_index: int, *, threads: int | None = None,
                     block_bytes: int = BLOCK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Mean pattern and per-position centre of mass of one scan (the focus scan).

    Parameters
    ----------
    store : ScanStore
    focus_index : int
        The scan to read (the store's index of the focus scan).
    threads : int, optional
        Blocks read at once (default min(4, CPUs)).
    block_bytes : int
        Size of one block of patterns in memory.

    Returns
    -------
    mean_pattern : ndarray, shape (Qx, Qy), float64
        In the store's normalisation.
    com : ndarray, shape (2, Rx, Ry), float64
        Centre of mass of every pattern in detector pixels (as stored).

    Raises
    ------
    ValueError
        A pattern that sums to zero (a blank frame: no centre of mass).
    """
    def reduce(p):
        com, total = centre_of_mass_px(p)
        return p.sum(axis=(0, 1), dtype=np.float64), com, total

    parts = _map_blocks(store, focus_index, reduce, threads=threads, block_bytes=block_bytes)
    mean = np.sum([p[0] for p in parts], axis=0) / (store.scan_shape[0] * store.scan_shape[1])
    com = np.concatenate([p[1] for p in parts], axis=1)
    total = np.concatenate([p[2] for p in parts], axis=0)
    if np.any(total <= 0):
        i, j = np.argwhere(total <= 0)[0]
        raise ValueError(f"{int(np.sum(total <= 0))} pattern(s) of the focus scan sum to zero (the first at scan "
                         f"position ({i}, {j})): blank frames have no centre of mass")
    return mean, com


def virtual_image_stack(store: ScanStore, centre, radius: float, *, threads: int | None = None,
                        block_bytes: int = BLOCK_BYTES) -> dict[str, np.ndarray]:
    """Virtual images of all three scans (:data:`~flowtie_dask.calibrate.virtual.VIRTUAL_IMAGES`).

    Parameters
    ----------
    store : ScanStore
    centre : (float, float)
        Beam centre in detector pixels (as stored).
    radius : float
        Bright-field disk radius in pixels.

    Returns
    -------
    dict of name → ndarray, shape (3, Rx, Ry), float64
        In the store's scan order.
    """
    masks = detector_masks(store.detector_shape, centre, radius)
    out = {name: [] for name in VIRTUAL_IMAGES}
    for scan in range(3):
        parts = _map_blocks(store, scan, lambda p: virtual_images(p, masks, centre), threads=threads,
                            block_bytes=block_bytes)
        for name in VIRTUAL_IMAGES:
            out[name].append(np.concatenate([p[name] for p in parts], axis=0))
    return {name: np.stack(v) for name, v in out.items()}

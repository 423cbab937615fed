"""Tiles of a scan and the checked, cached pieces of work the runner reads and writes.

* :func:`plan_tiles` cuts a scan into tiles with a halo (wrapped around for periodic scans);
  :func:`auto_tile_size` sizes them by bytes (the haloed block a task holds), not by positions;
* the resume cache: finished pieces written atomically as ``.npz`` (:func:`load_partial`,
  :func:`load_field`), damaged ones recognised (:func:`readable`) and recomputed.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass

import numpy as np

from ..atomic import write_file_atomic
from ..quality import BlockReport

__all__ = ["MAX_TILE", "MIN_TILE", "TILE_BYTES", "Tile", "auto_tile_size", "load_field", "load_partial", "plan_tiles",
           "readable", "save_partial", "write_npz", "report_bytes"]


@dataclass(frozen=True)
class Tile:
    """A block of scan positions and the haloed block read for it.

    Attributes
    ----------
    rows, cols : tuple of int
        Global scan indices read (interior plus halo; wrapped around for periodic scans, clipped otherwise).
    xs, ys : range
        Global indices of the interior.
    interior : (slice, slice)
        The interior within the read block.
    boundary : {"periodic", "mirror"}
        Boundary condition of per-tile solvers: periodic only for a whole periodic scan.
    """

    rows: tuple
    cols: tuple
    xs: range
    ys: range
    interior: tuple
    boundary: str


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
    list of Tile
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
                rows = tuple(i % rx for i in range(xs[0] - h, xs[-1] + h + 1))
                cols = tuple(j % ry for j in range(ys[0] - h, ys[-1] + h + 1))
                lo_x, lo_y = h, h
            else:
                a, b = max(0, xs[0] - h), min(rx, xs[-1] + h + 1)
                c, d = max(0, ys[0] - h), min(ry, ys[-1] + h + 1)
                rows, cols = tuple(range(a, b)), tuple(range(c, d))
                lo_x, lo_y = xs[0] - a, ys[0] - c
            tiles.append(Tile(rows=rows, cols=cols, xs=xs, ys=ys,
                              interior=(slice(lo_x, lo_x + len(xs)), slice(lo_y, lo_y + len(ys))),
                              boundary="periodic" if (whole and periodic) else "mirror"))
    return tiles


#: The most bytes of one tile's haloed block as a task holds it (the scans it reads × positions × detector pixels,
#: float32): 64×64-position tiles at a 64×64 detector (453 MiB for three scans with a 16-position halo) and at a
#: 128×128 one without a halo (768 MiB: TIE's global path), where smaller tiles cost time (measured, TIE on a
#: 128×128 scan, 2 workers: 48² tiles 35.0 s and 0.9 GB per worker, 64² tiles 25.9 s and 1.5 GB); a worker's peak
#: is 2–3× its block.
TILE_BYTES = 2**30
#: The smallest side of an automatic tile in scan positions (below it the halo is most of what is read).
MIN_TILE = 16
#: The largest: beyond it a task's fixed costs are already spread and only its memory grows (measured on a
#: 256×256 scan × 64×64 detector, TIE on 2 workers: 30.7 s at 64² tiles, 30.9 s at 96², 36.9 s at 128²; worker
#: peak 0.66, 1.05 and 1.6 GB).
MAX_TILE = 64


def auto_tile_size(scan_shape: tuple[int, int], detector_shape: tuple[int, int], *, halo: int, scans: int = 3,
                   align: int = 1, budget: int = TILE_BYTES, parts: int = 1) -> tuple[tuple[int, int], str]:
    """The largest square tile (up to :data:`MAX_TILE`) whose haloed block fits ``budget`` bytes, so a worker's
    memory follows the bytes of a tile whatever the detector (a 64×64-position tile of a 256×256 detector holds 16×
    the data of a 64×64 one).

    Parameters
    ----------
    scan_shape : (Rx, Ry)
        Scan positions.
    detector_shape : (Qx, Qy)
        Detector pixels (after any binning).
    halo : int
        Positions read on each side of a tile (0: tiles read without overlap).
    scans : int
        Scans a task reads (3: the defocus series; 1: a method reading the focus scan only).
    align : int
        The side is a multiple of this where the budget allows (the store's chunk side in scan positions: where the
        tiles start on the chunk grid, a tile's interior then decompresses no chunk that a neighbouring tile's
        interior also does).
    budget : int
        Bytes of the haloed block, float32 (:data:`TILE_BYTES`).
    parts : int
        At least this many tiles where :data:`MIN_TILE` allows (the workers' threads: each gets a tile).

    Returns
    -------
    tile : (tx, ty)
        Interior side in scan positions, at most :data:`MAX_TILE` and the scan: a side of at least :data:`MIN_TILE`
        evened over each axis (so an axis a little longer than one tile gets two of about half of it).
    reason : str
        The choice in words, with the block's size (kept in the result's attrs as ``tile_reason``).
    """
    if min(scan_shape) < 1 or min(detector_shape) < 1:
        raise ValueError(f"scan_shape and detector_shape must be positive, got {scan_shape} and {detector_shape}")
    if halo < 0 or scans < 1 or align < 1 or budget <= 0:
        raise ValueError(f"halo ≥ 0, scans ≥ 1, align ≥ 1 and budget > 0 needed, got {halo}, {scans}, {align}, "
                         f"{budget}")
    per_position = scans * detector_shape[0] * detector_shape[1] * 4
    side = math.isqrt(budget // per_position) - 2 * halo
    over = side < MIN_TILE
    side = min(side, MAX_TILE)
    if parts > 1:  # enough tiles for every thread
        side = min(side, math.ceil(math.sqrt(scan_shape[0] * scan_shape[1] / parts)))
    side = max(side, MIN_TILE)
    if side // align * align >= MIN_TILE:
        side = side // align * align  # on the store's chunks
    else:
        align = 1  # chunks larger than the tile: no side is on them
    # as few tiles per axis as the side allows, evened out (no sliver at the edge), still on the chunks
    tile = tuple(min(n, side, math.ceil(math.ceil(n / math.ceil(n / side)) / align) * align) for n in scan_shape)
    block = [min(t + 2 * halo, n) if t < n else n for t, n in zip(tile, scan_shape)]
    size = block[0] * block[1] * per_position
    text = (f"{tile[0]}×{tile[1]} positions per tile: the block read with a {halo}-position halo "
            f"({block[0]}×{block[1]} positions × {detector_shape[0]}×{detector_shape[1]} pixels × {scans} "
            f"scan{'s' if scans > 1 else ''}, float32) is {size / 2**20:.0f} MiB")
    if over:
        text += (f", over the {budget / 2**20:.0f} MiB per tile even at the smallest tile: bin the detector "
                 "(import --bin 2) or give the workers more memory")
    else:
        text += f", within {budget / 2**20:.0f} MiB per tile"
    return tile, text


def save_partial(cache: str | None, name: str, part: tuple) -> tuple:
    """Write a finished tile partial atomically into the resume cache (no-op without a cache)."""
    if cache is None:
        return part
    (ox, oy), num, ill, report = part
    write_npz(os.path.join(cache, f"{name}.npz"), offset=np.array([ox, oy]), num=num, ill=ill,
               report=report_bytes(report))
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
    with np.load(file) as z:
        report = BlockReport.from_full(json.loads(z["report"].tobytes().decode()))
        return (int(z["offset"][0]), int(z["offset"][1])), z["num"], z["ill"], report


def report_bytes(report) -> np.ndarray:
    return np.frombuffer(json.dumps(report.as_full()).encode(), dtype=np.uint8)


def write_npz(file: str, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_file_atomic(file, buf.getvalue())


def readable(file: str) -> bool:
    """A cached piece that a killed run may have left damaged is recomputed, not loaded (the zip directory is
    at the end of the file, so a truncated one fails here)."""
    try:
        with np.load(file) as z:
            z.files  # noqa: B018
        return True
    except Exception:  # noqa: BLE001 - zipfile.BadZipFile, EOFError, OSError, ValueError
        return False


def load_field(file: str):
    """A gradient field written by :func:`field_task` in an earlier run.

    Returns
    -------
    field : ndarray, shape (2, tx, ty, Qx, Qy), float32, rad/Å
    report : BlockReport
    """
    with np.load(file) as z:
        return z["field"], BlockReport.from_full(json.loads(z["report"].tobytes().decode()))



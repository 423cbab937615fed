"""Tiles of a scan and the checked, cached pieces of work the runner reads and writes.

* :func:`plan_tiles` cuts a scan into tiles with a halo (wrapped around for periodic scans);
* the resume cache: finished pieces written atomically as ``.npz`` (:func:`load_partial`,
  :func:`load_field`), damaged ones recognised (:func:`readable`) and recomputed.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass

import numpy as np

from ..atomic import write_file_atomic
from ..quality import BlockReport

__all__ = ["Tile", "load_field", "load_partial", "plan_tiles", "readable",
           "save_partial", "write_npz", "report_bytes"]


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



"""Checks of the measured values, applied to every block as it is read (before any method sees it).

What is refused, what is repaired, and why
------------------------------------------
* **Non-finite values** (NaN, ±Inf) and **negative intensities** are refused: no detector produces them,
  so the data were damaged or processed wrongly upstream (a failed dark subtraction, a broken conversion),
  and no repair would be honest. The message names the first scan position, the defocus index and the
  detector pixel. A block whose patterns are mostly empty is refused (no signal).
* **Stuck detector pixels** are **repaired** in every pattern by the mean of their good 3×3 detector
  neighbours, as LiberTEM's and py4DSTEM's corrections do: *hot* — high in most patterns (median over the
  block) at more than ``hot_factor`` (10×) the brightest smooth level of the mean pattern (the maximum of
  its 3×3 median filter); *dead* — zero in every pattern while all 8 neighbours carry so much signal (> 20
  counts over the block) that an all-zero run has no chance.
* **Spikes** (a cosmic ray, a readout glitch) are **repaired** the same way, in their pattern only: one value
  above ``spike_factor`` (50×) that smooth level that also holds more than half of its pattern's counts or
  is more than 20× its brightest detector neighbour, and is at least 10 counts (one count being the smallest
  positive value in the block). Bright-field channelling in noise-free simulations and single counts at low
  dose meet none of these; a bright-field disk under 3 px radius (``bright_field``) is exempt, since its
  pixels are legitimately far above any smooth level.
* **Dead patterns** — a pattern whose total is below ``dead_fraction`` (1 %) of the median total of the
  same scan in the block: the beam was blanked, a frame was dropped or the frame counter slipped. Up to
  ``max_bad_fraction`` (1 %) of a block's patterns are **repaired** by the mean of their live neighbours
  in the scan (8-neighbourhood, same defocus), because one missing frame in a 50 GB scan should not stop a
  reconstruction and its neighbours are the best estimate the data hold; more is refused (the scan or its
  ``--scan-shape`` is wrong). Below about 20 counts per pattern an empty pattern is shot noise and is left
  alone. Dead patterns are looked for last, so their neighbours are already free of spikes.

Repairs are computed in float64 and written back in the block's dtype (rounded for integer counts). The
statistics are per block: a tile with its halo holds thousands of patterns, enough for medians to be robust.

Every repair is counted in the :class:`BlockReport`, which the runner sums into the result's attributes
and reports on stderr.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .physics.constants import wavelength
from .store import read_block

__all__ = ["BadDataError", "BlockReport", "bright_field_disk", "check_block", "check_phase", "read_checked"]


class BadDataError(ValueError):
    """The measured values cannot be reconstructed (one line naming where and what to do)."""


@dataclass
class BlockReport:
    """What :func:`check_block` repaired in one block.

    Attributes
    ----------
    dead_patterns : list of (int, int, int)
        (defocus index, Rx, Ry) of repaired dead patterns (global scan positions).
    hot_pixels : list of (int, int, int)
        (defocus index, Qx, Qy) of repaired stuck detector pixels (hot or dead).
    spikes : list of (int, int, int, int, int)
        (defocus index, Rx, Ry, Qx, Qy) of repaired single-value spikes.
    """

    dead_patterns: list = field(default_factory=list)
    hot_pixels: list = field(default_factory=list)
    spikes: list = field(default_factory=list)

    def merge(self, other: "BlockReport") -> "BlockReport":
        """Union (positions repaired in overlapping halos are counted once)."""
        return BlockReport(sorted(set(map(tuple, self.dead_patterns)) | set(map(tuple, other.dead_patterns))),
                           sorted(set(map(tuple, self.hot_pixels)) | set(map(tuple, other.hot_pixels))),
                           sorted(set(map(tuple, self.spikes)) | set(map(tuple, other.spikes))))

    def as_full(self) -> dict:
        """Every entry, JSON-able (for resume partials)."""
        return {"dead_patterns": [list(map(int, x)) for x in self.dead_patterns],
                "hot_pixels": [list(map(int, x)) for x in self.hot_pixels],
                "spikes": [list(map(int, x)) for x in self.spikes]}

    @classmethod
    def from_full(cls, d: dict) -> "BlockReport":
        """Inverse of :meth:`as_full`."""
        return cls(*(list(map(tuple, d.get(k, []))) for k in ("dead_patterns", "hot_pixels", "spikes")))

    def as_attrs(self) -> dict:
        """JSON-able summary (counts and the first 20 of each)."""
        return {name: {"count": len(v), "first": [list(map(int, x)) for x in v[:20]]}
                for name, v in (("dead_patterns", self.dead_patterns), ("hot_pixels", self.hot_pixels),
                                ("spikes", self.spikes))}

    def summary(self) -> str:
        """One line for the user, empty when nothing was repaired."""
        parts = [f"{len(v)} {name}" for name, v in (("dead patterns", self.dead_patterns),
                                                    ("stuck detector pixels", self.hot_pixels),
                                                    ("spikes", self.spikes)) if v]
        return ("repaired " + ", ".join(parts) + " (replaced by the mean of their neighbours; positions in the "
                "result's 'data_repairs' attribute)") if parts else ""


def _where(mask: np.ndarray, rows, cols, defocus) -> str:
    idx = np.argwhere(mask)
    d, i, j = (int(v) for v in idx[0][:3])
    rest = ", ".join(f"detector ({int(a)}, {int(b)})" for a, b in [idx[0][3:5]]) if idx.shape[1] == 5 else ""
    return (f"scan position (Rx={rows[i]}, Ry={cols[j]}) of defocus index {defocus[d]}"
            + (f", {rest}" if rest else "") + f" ({len(idx)} in this block)")


def _neighbour_mean_patterns(x: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Mean of the live 8-neighbours of each bad pattern; x (Rx, Ry, Qx, Qy), bad (Rx, Ry) bool."""
    out = x.copy()
    rx, ry = bad.shape
    for i, j in np.argwhere(bad):
        acc, n = 0.0, 0
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                a, b = i + di, j + dj
                if (di or dj) and 0 <= a < rx and 0 <= b < ry and not bad[a, b]:
                    acc = acc + x[a, b].astype(np.float64)
                    n += 1
        if n == 0:
            return None
        out[i, j] = _cast(acc / n, x.dtype)
    return out


def _neighbour_mean_pixels(img: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Replace bad detector pixels of patterns (..., Qx, Qy) by the mean of their good 3×3 neighbours.

    One pass per bad pixel, vectorised over the patterns (a stuck pixel is repaired in every pattern at the
    cost of reading its 8 neighbours' columns).
    """
    out = img.copy()
    qx, qy = bad.shape
    for a, b in np.argwhere(bad):
        acc = np.zeros(img.shape[:-2], np.float64)
        n = 0
        for da in (-1, 0, 1):
            for db in (-1, 0, 1):
                u, v = a + da, b + db
                if (da or db) and 0 <= u < qx and 0 <= v < qy and not bad[u, v]:
                    acc += img[..., u, v]
                    n += 1
        out[..., a, b] = _cast(acc / max(n, 1), img.dtype)
    return out


def _cast(values: np.ndarray, dtype) -> np.ndarray:
    """Float64 repair values in the block's dtype (rounded for integer counts)."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _dead_pixels(x: np.ndarray, m_q: np.ndarray, mean_q: np.ndarray, n: int) -> np.ndarray:
    """Detector pixels that are zero in every pattern while all 8 neighbours have signal, and so much of it
    that an all-zero run has no chance (more than 20 expected counts over the block; one count is taken as
    the smallest positive value in a sample of patterns, so noise-free data qualify at once)."""
    from scipy.ndimage import minimum_filter

    zero = m_q == 0
    if not zero.any():
        return zero
    unit = _unit(x)
    if unit == 0:
        return np.zeros_like(zero)
    k = np.ones((3, 3), bool)
    k[1, 1] = False
    neighbours = minimum_filter(mean_q, footprint=k, mode="nearest")
    return zero & (neighbours * n > 20 * unit)


def _unit(block: np.ndarray) -> float:
    """The smallest positive value in a sample of patterns: one count for count data, tiny for noise-free data."""
    flat = block.reshape((-1,) + block.shape[-2:])
    sample = flat[:: max(1, flat.shape[0] // 64)]
    positive = sample[sample > 0]
    return float(positive.min()) if positive.size else 0.0


def _bright_field_guard(shape, bright_field) -> np.ndarray:
    """Detector pixels never taken for stuck pixels or spikes: a bright-field disk under 3 px radius (its few
    pixels are legitimately far brighter than any smooth level), with a 2 px margin."""
    guard = np.zeros(shape, bool)
    if bright_field is None:
        return guard
    cx, cy, radius = bright_field
    if radius < 3:
        qx, qy = np.ogrid[:shape[0], :shape[1]]
        guard = (qx - cx) ** 2 + (qy - cy) ** 2 <= (radius + 2) ** 2
    return guard


def check_block(block: np.ndarray, *, rows, cols, defocus=(0, 1, 2), source: str = "the store",
                bright_field: tuple[float, float, float] | None = None, dead_fraction: float = 0.01,
                max_bad_fraction: float = 0.01, hot_factor: float = 10.0,
                spike_factor: float = 50.0) -> tuple[np.ndarray, BlockReport]:
    """Refuse or repair the values of a block of patterns (see the module docstring).

    Parameters
    ----------
    block : ndarray, shape (D, Rx, Ry, Qx, Qy), float or unsigned integer
        Intensities of D scans at the block's scan positions (host array; never modified: a repaired copy is
        returned).
    rows, cols : sequence of int
        Global scan indices of the block's Rx and Ry positions (for messages and the report).
    defocus : sequence of int
        Defocus index of each of the D scans.
    source : str
        Store path, for messages.
    bright_field : (cx, cy, radius), optional
        Centre and radius of the bright-field disk in detector pixels; a disk under 3 px radius is exempt from
        the stuck-pixel and spike checks.

    Returns
    -------
    block : ndarray, shape (D, Rx, Ry, Qx, Qy)
        The input, or a repaired copy.
    report : BlockReport

    Raises
    ------
    BadDataError
        Non-finite or negative values, a block without signal, or more dead patterns than can be repaired.
    """
    rows, cols, defocus = list(rows), list(cols), list(defocus)
    report = BlockReport()
    totals = block.sum(axis=(-2, -1), dtype=np.float64)  # (D, Rx, Ry)
    if not np.isfinite(totals.sum()):
        bad = ~np.isfinite(block)
        raise BadDataError(f"{source}: non-finite intensity (NaN or Inf) at {_where(bad, rows, cols, defocus)}: "
                           "the data are damaged; re-import them from the camera files "
                           "('flowtie-dask info --check' lists every bad value)")
    if block.min() < 0:
        raise BadDataError(f"{source}: negative intensity at {_where(block < 0, rows, cols, defocus)}: intensities are "
                           "counts or beam fractions ≥ 0; clip dark-subtracted data at 0 and import again")
    copied = False

    def writable():
        nonlocal block, copied
        if not copied:
            block, copied = block.copy(), True
        return block

    from scipy.ndimage import median_filter

    n = block.shape[1] * block.shape[2]
    unit = _unit(block)
    guard = _bright_field_guard(block.shape[-2:], bright_field)
    for d in range(block.shape[0]):
        med = float(np.median(totals[d]))
        if not med > 0:
            raise BadDataError(f"{source}: no signal in defocus index {defocus[d]} at scan positions Rx "
                               f"{rows[0]}–{rows[-1]}, Ry {cols[0]}–{cols[-1]} (most pattern totals are 0): "
                               "check that the scan was recorded and imported")
        # 1. stuck detector pixels (the same pixel in every pattern), from per-pixel statistics over the block
        x = block[d]
        s_q = x.sum(axis=(0, 1), dtype=np.float64)
        m_q = x.max(axis=(0, 1)).astype(np.float64)
        mean_wo_max = (s_q - m_q) / (n - 1) if n > 1 else s_q
        level = float(median_filter(mean_wo_max, size=3, mode="nearest").max())
        if level > 0:
            hot = np.zeros_like(guard)
            for qa, qb in np.argwhere((mean_wo_max > hot_factor * level) & ~guard):
                hot[qa, qb] = np.median(x[:, :, qa, qb]) > hot_factor * level  # high in most patterns, not a few
            stuck = hot | _dead_pixels(x, m_q, mean_wo_max, n)
            if stuck.any():
                writable()[d] = _neighbour_mean_pixels(block[d], stuck)
                report.hot_pixels += [(defocus[d], int(a), int(b)) for a, b in np.argwhere(stuck)]
                m_q = block[d].max(axis=(0, 1)).astype(np.float64)
            # 2. spikes: one value far above the brightest smooth level, and either most of its pattern or far
            #    above its own detector neighbours
            suspect = np.argwhere((m_q > spike_factor * level) & ~stuck & ~guard)
            if len(suspect):
                pat_tot = block[d].sum(axis=(-2, -1), dtype=np.float64)
                # a spike is also at least 10 counts: at low dose, where 50× the smooth level is below one
                # count, isolated single counts are signal
                floor = max(spike_factor * level, 10 * unit)
                for qa, qb in suspect:
                    col = block[d][:, :, qa, qb]
                    for i, j in np.argwhere(col > floor):
                        v = float(col[i, j])
                        nb = block[d, i, j, max(qa - 1, 0):qa + 2, max(qb - 1, 0):qb + 2].astype(np.float64)
                        nb_max = np.sort(nb.ravel())[-2] if nb.size > 1 else 0.0  # largest but the value itself
                        if not (v > 0.5 * pat_tot[i, j] or v > 20 * max(nb_max, unit)):
                            continue
                        mask = np.zeros(block.shape[-2:], bool)
                        mask[qa, qb] = True
                        b = writable()
                        b[d, i, j] = _neighbour_mean_pixels(b[d, i, j][None], mask)[0]
                        report.spikes.append((defocus[d], rows[i], cols[j], int(qa), int(qb)))
        # 3. dead patterns, once the others are repaired; below ~20 counts per pattern an empty pattern is
        #    shot noise, not a dead frame, and is left alone
        if unit > 0 and med / unit < 20:
            continue
        dead = totals[d] <= dead_fraction * med
        n_dead = int(dead.sum())
        if n_dead:
            i0, j0 = (int(v) for v in np.argwhere(dead)[0])
            if n_dead > max(1, max_bad_fraction * dead.size):
                raise BadDataError(
                    f"{source}: {n_dead} of {dead.size} patterns of defocus index {defocus[d]} have no signal "
                    f"(first at Rx={rows[i0]}, Ry={cols[j0]}), more than the {max_bad_fraction:.0%} that are "
                    "repaired: a blanked beam, dropped frames or a wrong --scan-shape; crop the scan or import it again")
            fixed = _neighbour_mean_patterns(block[d], dead)
            if fixed is None:
                raise BadDataError(f"{source}: a dead pattern of defocus index {defocus[d]} at Rx={rows[i0]}, "
                                   f"Ry={cols[j0]} has no live neighbour: crop the scan or import it again")
            writable()[d] = fixed
            report.dead_patterns += [(defocus[d], rows[i], cols[j]) for i, j in np.argwhere(dead)]
    return block, report


def read_checked(path: str, rows: list[int], cols: list[int], *, defocus=None, bright_field=None):
    """Read intensity[defocus][:, rows, cols] and check its values (:func:`flowtie_dask.quality.check_block`).

    Parameters
    ----------
    path : str or StoreHandle
        Scan store.
    rows, cols : list of int
        Global scan indices (contiguous or wrapped).
    defocus : list of int, optional
        Defocus indices to read (default all three).
    bright_field : (cx, cy, radius), optional
        Bright-field disk in stored detector pixels (:func:`bright_field_disk`).

    Returns
    -------
    block : ndarray, shape (D, len(rows), len(cols), Qx, Qy), float32 (host)
    report : BlockReport
    """
    block = read_block(path, rows, cols, defocus=defocus)
    defocus = [0, 1, 2] if defocus is None else list(defocus)
    return check_block(block, rows=rows, cols=cols, defocus=defocus, source=os.fspath(path), bright_field=bright_field)


def bright_field_disk(metadata) -> tuple[float, float, float]:
    """(cx, cy, radius) of the bright-field disk in stored detector pixels.

    Parameters
    ----------
    metadata : ScanMetadata

    Returns
    -------
    (float, float, float)
        Centre (pixels along Qx, Qy) and radius α/λ/Δq (pixels; the smaller sampling).
    """
    radius = metadata.semiangle * 1e-3 / wavelength(metadata.energy) / min(metadata.detector_sampling)
    return float(metadata.detector_center[0]), float(metadata.detector_center[1]), float(radius)


def check_phase(phase: np.ndarray, *, valid: np.ndarray | None = None, what: str = "the reconstructed phase") -> None:
    """Refuse a phase map with non-finite pixels (before it reaches the unwrapper, which would never return).

    Parameters
    ----------
    phase : ndarray, shape (Nx, Ny)
    valid : ndarray of bool, shape (Nx, Ny), optional
        Pixels that must be finite (default all).

    Raises
    ------
    BadDataError
    """
    bad = ~np.isfinite(phase)
    if valid is not None:
        bad &= valid
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise BadDataError(f"{what} has {int(bad.sum())} non-finite pixels (first at object pixel ({i}, {j})): the "
                           "method produced NaN from these data or this model; check the store with "
                           "'flowtie-dask info --check' and the model file")

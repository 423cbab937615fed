"""Optics drawn per structure for training sets that span many microscopes (``simulate --optics-range``).

A range file (JSON or YAML) gives [low, high] per quantity; :data:`DEFAULT_OPTICS_RANGE` is the one the
shipped model was trained on. For each structure :func:`draw_optics` draws, seeded, the beam energy, the
semi-angle, the defocus step, C30, the aperture-edge width, the thickness, the scan step and the detector
angle per pixel, then sizes the periodic simulation to realise them: the supercell width L sets the detector
sampling (1/L, i.e. λ/L rad per pixel) and, with the number of scan positions N, the step L/N; the grid
holds the detector (out to 2α, at most 64 pixels) inside the 2/3 band limit with a pixel of at most 0.2 Å.
Where the drawn pixel angle and step cannot both be met with 24–40 scan positions and a bright-field disk of
4–24 detector pixels in radius, L is moved to the nearest width that meets them, in whole unit cells (the
realised values are recorded per member). The range key ``draw`` picks how: 2 (the default) draws the scan step
uniformly and the detector angle per pixel log-uniformly, and makes the cell as wide as λ/θ asks (up to 48 Å),
scanning a window of it of at most 40 positions at the drawn step where it is wider; 1 (the draw of the shipped
general model's set, ``--optics-range`` with ``"draw": 1``) drew the step log-uniformly and θ uniformly and scanned
the whole cell, at most 40 steps wide, so small steps came with coarse detector sampling. Poisson noise is
not simulated here: training draws a dose per tile from ``dose_per_pattern`` (one noise-free simulation
serves every dose).
"""

from __future__ import annotations

import math
import os
from dataclasses import replace

import numpy as np

from ..mapping_files import parse_mapping_text
from ..physics.constants import wavelength
from .crystals import build_crystal
from .parameters import SimulationParameters
from .random_structures import random_crystal

__all__ = ["DEFAULT_OPTICS_RANGE", "RANGE_KEYS", "load_optics_range", "draw_optics"]

#: The ranges of the shipped model's training set (each [low, high]; ``phonon_fraction`` a probability).
DEFAULT_OPTICS_RANGE = {
    "energy_kV": [60.0, 300.0],
    "semiangle_mrad": [10.0, 35.0],
    "defocus_step_A": [5.0, 60.0],
    "cs_um": [0.0, 3.0],
    "aperture_edge_mrad": [0.0, 2.0],
    "thickness_A": [2.0, 60.0],
    "scan_step_A": [0.1, 0.5],
    "detector_mrad_per_pixel": [0.5, 3.0],
    "dose_per_pattern": [1e3, 1e6],
    "phonon_fraction": 0.3,
    "draw": 2,
}
RANGE_KEYS = tuple(k for k in DEFAULT_OPTICS_RANGE if k not in ("phonon_fraction", "draw"))

_SCAN_POSITIONS = (24, 40)
_DISK_PIXELS = (4.0, 24.0)
_DETECTOR = 64
_MAX_CELL = 48.0  # Å: an exit-wave grid of at most 240 pixels
#: The draw ``draw_optics`` makes unless a range file names another (its key ``draw``). Draw 1 made the shipped
#: general model's training set.
DRAW = DEFAULT_OPTICS_RANGE["draw"]


def load_optics_range(source) -> dict:
    """The ranges from a JSON/YAML file, ``"default"`` or a dict, every value checked.

    Returns
    -------
    dict
        :data:`DEFAULT_OPTICS_RANGE` updated by the file; each range a [low, high] list of floats.

    Raises
    ------
    ValueError
        One line naming the file and the key that is unknown, malformed or out of order.
    """
    name = "the optics range"
    if isinstance(source, dict):
        given = source
    elif source in (None, "default"):
        given = {}
    else:
        name = repr(os.fspath(source))
        if not os.path.isfile(source):
            raise ValueError(f"--optics-range file {name} does not exist")
        try:
            with open(source, encoding="utf-8") as f:
                text = f.read()
            given = parse_mapping_text(text, source)
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--optics-range file {name} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
        except ValueError as exc:
            raise ValueError(f"--optics-range {name} could not be parsed: {exc}") from None
    if not isinstance(given, dict):
        raise ValueError(f"{name} must be a mapping of quantity → [low, high]")
    unknown = sorted(set(given) - set(DEFAULT_OPTICS_RANGE))
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {', '.join(unknown)}; known: {', '.join(DEFAULT_OPTICS_RANGE)}")
    out = {k: (list(v) if isinstance(v, list) else v) for k, v in DEFAULT_OPTICS_RANGE.items()}
    for key, value in given.items():
        if key == "draw":
            if value not in (1, 2) or isinstance(value, bool):
                raise ValueError(f"{name}: draw must be 1 (the general model's) or 2 (the default), got {value!r}")
            out[key] = int(value)
            continue
        if key == "phonon_fraction":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{name}: phonon_fraction must be a number in [0, 1], got {value!r}")
            out[key] = float(value)
            continue
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: {key} must be [low, high], got {value!r}") from None
        floor = 0.0 if key in ("cs_um", "aperture_edge_mrad") else 1e-12
        if not (math.isfinite(lo) and math.isfinite(hi) and floor <= lo <= hi):
            raise ValueError(f"{name}: {key} = {value!r} must be finite with {floor:g} ≤ low ≤ high")
        out[key] = [lo, hi]
    return out


def _uniform(rng, pair, log=False):
    lo, hi = pair
    if log and lo > 0:
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


def draw_optics(params: SimulationParameters, ranges: dict, seed: int) -> tuple[SimulationParameters, dict]:
    """The simulation of one training structure with optics drawn from ``ranges`` (seeded).

    Parameters
    ----------
    params : SimulationParameters
        Shared settings (material, slice thickness …); the drawn fields replace its optics and sampling.
    ranges : dict
        From :func:`load_optics_range`.
    seed : int
        The structure's seed (the draw uses its own stream of it).

    Returns
    -------
    params : SimulationParameters
    drawn : dict
        The realised values (kV, mrad, Å, µm, mrad per pixel, scan positions, grid), JSON-able.
    """
    rng = np.random.default_rng([seed, 8])
    energy = _uniform(rng, ranges["energy_kV"]) * 1e3
    lam = wavelength(energy)
    alpha = _uniform(rng, ranges["semiangle_mrad"]) * 1e-3
    dz = _uniform(rng, ranges["defocus_step_A"])
    cs = _uniform(rng, ranges["cs_um"]) * 1e4 if rng.random() < 0.5 else 0.0
    edge = _uniform(rng, ranges["aperture_edge_mrad"])
    thickness = _uniform(rng, ranges["thickness_A"], log=True)
    first = ranges.get("draw", DEFAULT_OPTICS_RANGE["draw"]) == 1  # the general model's draw (module docstring)
    # draw 2: steps uniform, so coarse ones (step·α/λ ≳ 0.3) are as common as fine ones; draw 1: log-uniform
    step = _uniform(rng, ranges["scan_step_A"], log=first)
    theta = _uniform(rng, ranges["detector_mrad_per_pixel"], log=not first) * 1e-3
    phonons = 2 if rng.random() < ranges["phonon_fraction"] else 1
    # the supercell width L = λ/θ sets the detector sampling; the bright-field disk stays 4–24 pixels in radius,
    # the cell holds at least the smallest scan, and the exit-wave grid stays at most _MAX_CELL / 0.2 Å (draw 1:
    # the cell is the scan, at most 40 steps wide)
    lo = max(_SCAN_POSITIONS[0] * step, _DISK_PIXELS[0] * lam / alpha)
    hi = min(_SCAN_POSITIONS[1] * step if first else _MAX_CELL, _DISK_PIXELS[1] * lam / alpha)
    width = float(np.clip(lam / theta, lo, hi)) if lo <= hi else hi
    p = replace(params, seed=seed, energy=energy, semiangle=alpha * 1e3, defocus_step=dz, cs=cs, aperture_edge=edge,
                thickness=thickness, thickness_cells=None, lateral_size=width, frozen_phonons=phonons,
                probe_frame=True)
    crystal = random_crystal(seed) if params.material == "random-crystal" else build_crystal(params.material, seed=seed)
    cell = [float(crystal.atoms.cell[i, i]) for i in (0, 1)]
    cells = [max(1, int(round(width / a))) for a in cell]
    for i, a in enumerate(cell):  # whole cells, the disk within _DISK_PIXELS where one cell allows
        while cells[i] * a * alpha / lam < _DISK_PIXELS[0]:
            cells[i] += 1
        while not first and cells[i] > 1 and cells[i] * a * alpha / lam > _DISK_PIXELS[1]:
            cells[i] -= 1
    size = [c * a for c, a in zip(cells, cell)]
    # per axis: the drawn step over a window of at most 40 positions where the cell is wider than that (the scan
    # is then not periodic), else the whole cell at 24–40 positions (the step as near the drawn one as that allows)
    scan, steps = [], []
    for s in size:
        n = int(round(s / step))
        if n > _SCAN_POSITIONS[1] and not first:
            scan.append(_SCAN_POSITIONS[1])
            steps.append(step)
        else:  # draw 1 always scans the whole cell
            scan.append(int(min(_SCAN_POSITIONS[1], max(_SCAN_POSITIONS[0], n))))
            steps.append(s / scan[-1])
    window = any(n * st < s * (1 - 1e-9) for n, st, s in zip(scan, steps, size))
    disk = min(size) * alpha / lam  # bright-field radius in detector pixels
    detector = int(min(_DETECTOR, max(32, 8 * math.ceil(4 * disk / 8))))  # out to 2α where 64 pixels allow
    need = max(1.5 * detector, max(size) / 0.2)  # the 2/3 band limit holds the detector; pixel ≤ 0.2 Å
    grid = int(16 * math.ceil(need / 16))
    p = replace(p, lateral_size=None, lateral_cells=tuple(cells), scan_pixels=tuple(scan), gpts=(grid, grid),
                detector_pixels=(detector, detector), scan_step=tuple(steps) if window else None)
    drawn = {"energy_kV": energy / 1e3, "semiangle_mrad": alpha * 1e3, "defocus_step_A": dz, "cs_um": cs / 1e4,
             "aperture_edge_mrad": edge, "thickness_A": thickness, "cell_A": size,
             "scan_step_A": steps, "scan_window": window,
             "detector_mrad_per_pixel": [lam / size[0] * 1e3, lam / size[1] * 1e3],
             "scan_pixels": scan, "gpts": grid, "detector_pixels": detector, "frozen_phonons": phonons}
    return p, drawn

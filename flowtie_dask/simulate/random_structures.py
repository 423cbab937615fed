"""Seeded random structures for training sets beyond cubic prototypes (``material="random-crystal"``).

:func:`random_crystal` starts from :func:`~flowtie_dask.simulate.crystals.random_cubic` and, each with its own
probability (all seeded), makes the cell orthorhombic (a, b, c stretched independently by up to ±8 %) and turns
the crystal about the beam by a rational angle (45° or 26.57°, i.e. viewing [110]/[210] in the plane), kept
orthogonal by the supercell that rotation needs. :func:`decorate` then works on the lateral supercell: random
substitutions of one species (5–25 % of its atoms by another element of the same pool) and vacancy columns
(every atom of one or two atomic columns removed along the beam). The truth phase is computed from the
decorated atoms, so the projected-phase truth stays exact.
"""

from __future__ import annotations

import math

import numpy as np

from .crystals import _ANIONS, _CATIONS, _METALS, Crystal, random_cubic

__all__ = ["random_crystal", "decorate", "ROTATIONS"]

#: In-plane supercell matrices whose cells stay orthogonal for a square lattice, and their rotation angles.
ROTATIONS = {45.0: ((1, 1), (-1, 1)), 26.565: ((2, 1), (-1, 2))}


def _rotated(atoms, rows):
    """The square-lattice crystal seen along the same beam but turned about it: a supercell with the in-plane
    vectors ``rows`` (integer combinations of a and b), rotated so that they lie along x and y."""
    from ase.build import make_supercell

    p = np.array([[rows[0][0], rows[0][1], 0], [rows[1][0], rows[1][1], 0], [0, 0, 1]])
    sc = make_supercell(atoms, p)
    v = np.asarray(sc.cell[0])
    angle = math.degrees(math.atan2(v[1], v[0]))
    sc.rotate(-angle, "z", rotate_cell=True)
    cell = np.asarray(sc.cell)
    sc.set_cell(np.diag([np.linalg.norm(cell[0]), np.linalg.norm(cell[1]), cell[2, 2]]), scale_atoms=False)
    sc.wrap()
    return sc


def random_crystal(seed: int) -> Crystal:
    """A seeded random crystal: a random cubic prototype, possibly orthorhombic and turned about the beam.

    Parameters
    ----------
    seed : int
        Same seed, same crystal (the structure drawn from ``random_cubic(seed)``, then its variations).

    Returns
    -------
    Crystal
        Orthogonal cell (Å), beam along z; the name lists the variations (e.g. ``"rocksalt-MgO-ortho-r45"``).
    """
    base = random_cubic(seed)
    rng = np.random.default_rng([seed, 11])
    atoms = base.atoms.copy()
    name = base.name
    if rng.random() < 0.3:
        stretch = 1.0 + rng.uniform(-0.08, 0.08, size=3)
        atoms.set_cell(np.diag(np.diag(np.asarray(atoms.cell)) * stretch), scale_atoms=True)
        name += "-ortho"
    elif rng.random() < 0.4:
        angle = float(rng.choice(list(ROTATIONS)))
        atoms = _rotated(atoms, ROTATIONS[angle])
        name += f"-r{angle:.0f}"
    return Crystal(name, atoms, base.prototype)


def decorate(atoms, seed: int):
    """Random substitutions and vacancy columns in a lateral supercell (seeded; returns a new Atoms).

    Parameters
    ----------
    atoms : ase.Atoms
        The supercell, positions in Å, beam along z.
    seed : int

    Returns
    -------
    atoms : ase.Atoms
    changes : dict
        ``{"substituted": [from, to, count], "vacancy_columns": n}`` (entries present only when applied).
    """
    rng = np.random.default_rng([seed, 12])
    atoms = atoms.copy()
    changes = {}
    symbols = atoms.get_chemical_symbols()
    if rng.random() < 0.5 and len(symbols) > 4:
        species = sorted(set(symbols))
        old = str(rng.choice(species))
        pool = next((p for p in (_CATIONS, _ANIONS, _METALS) if old in p), _CATIONS)
        new = str(rng.choice([e for e in pool if e != old]))
        idx = [i for i, s in enumerate(symbols) if s == old]
        n = max(1, int(round(rng.uniform(0.05, 0.25) * len(idx))))
        for i in rng.choice(idx, size=n, replace=False):
            symbols[int(i)] = new
        atoms.set_chemical_symbols(symbols)
        changes["substituted"] = [old, new, n]
    if rng.random() < 0.4 and len(atoms) > 8:
        n_cols = int(rng.integers(1, 3))
        xy = atoms.positions[:, :2]
        drop = np.zeros(len(atoms), bool)
        for _ in range(n_cols):
            centre = xy[int(rng.integers(len(atoms)))]
            drop |= np.linalg.norm(xy - centre, axis=1) < 0.4
        if drop.sum() < len(atoms) // 2:
            atoms = atoms[~drop]
            changes["vacancy_columns"] = n_cols
    return atoms, changes

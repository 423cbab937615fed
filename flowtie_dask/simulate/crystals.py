"""Crystals for the simulator, through ase: named materials, structure files and seeded random
cubic crystals (the offline stand-in for the paper's Materials Project structures).

Every structure returned has an orthogonal cell with the beam along z (the third cell vector).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

__all__ = [
    "NAMED_MATERIALS",
    "PROTOTYPES",
    "Crystal",
    "gaas",
    "srtio3",
    "read_structure",
    "random_cubic",
    "build_crystal",
    "supercell",
]

PROTOTYPES = ("rocksalt", "zincblende", "perovskite", "fluorite", "cscl", "bcc", "fcc", "diamond")


@dataclass(frozen=True)
class Crystal:
    """A named unit cell.

    Attributes
    ----------
    name : str
        Human-readable name, e.g. ``"GaAs"`` or ``"rocksalt-MgO"``.
    atoms : ase.Atoms
        Orthogonal unit cell (Å), beam along z.
    prototype : str
        Structure type, or ``"file"`` for a structure file.
    """

    name: str
    atoms: object
    prototype: str


def _cubic(symbols, frac, a):
    from ase import Atoms

    return Atoms(symbols=symbols, scaled_positions=frac, cell=[a, a, a], pbc=True)


_FCC = [(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)]


def _prototype_atoms(prototype: str, elements: list[str], a: float):
    fcc = np.array(_FCC)
    if prototype == "rocksalt":
        return _cubic([elements[0]] * 4 + [elements[1]] * 4, np.vstack([fcc, (fcc + [0.5, 0, 0]) % 1]), a)
    if prototype == "zincblende":
        return _cubic([elements[0]] * 4 + [elements[1]] * 4, np.vstack([fcc, fcc + 0.25]), a)
    if prototype == "diamond":
        return _cubic([elements[0]] * 8, np.vstack([fcc, fcc + 0.25]), a)
    if prototype == "fluorite":
        anion = np.array([(x, y, z) for x in (0.25, 0.75) for y in (0.25, 0.75) for z in (0.25, 0.75)])
        return _cubic([elements[0]] * 4 + [elements[1]] * 8, np.vstack([fcc, anion]), a)
    if prototype == "perovskite":  # ABX3: A at corner, B at body centre, X at face centres
        frac = [(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)]
        return _cubic([elements[0], elements[1]] + [elements[2]] * 3, frac, a)
    if prototype == "cscl":
        return _cubic([elements[0], elements[1]], [(0, 0, 0), (0.5, 0.5, 0.5)], a)
    if prototype == "bcc":
        return _cubic([elements[0]] * 2, [(0, 0, 0), (0.5, 0.5, 0.5)], a)
    if prototype == "fcc":
        return _cubic([elements[0]] * 4, fcc, a)
    raise ValueError(f"unknown prototype {prototype!r}; choose one of {', '.join(PROTOTYPES)}")


def gaas() -> Crystal:
    """GaAs, zincblende, a = 5.6533 Å (8 atoms, Ga at the origin)."""
    return Crystal("GaAs", _prototype_atoms("zincblende", ["Ga", "As"], 5.6533), "zincblende")


def srtio3() -> Crystal:
    """SrTiO3, cubic perovskite, a = 3.905 Å (Sr at the corner, Ti at the body centre)."""
    return Crystal("SrTiO3", _prototype_atoms("perovskite", ["Sr", "Ti", "O"], 3.905), "perovskite")


NAMED_MATERIALS = {"GaAs": gaas, "SrTiO3": srtio3}


def read_structure(path: str | os.PathLike) -> Crystal:
    """Read any structure file ase understands (CIF, POSCAR, xyz with a cell …).

    Raises ``ValueError`` when the file has no cell or a non-orthogonal one (make an orthogonal
    supercell with ase first, e.g. ``ase.build.make_supercell``).

    Returns
    -------
    Crystal
        With ``atoms`` wrapped into the cell.
    """
    import ase.io

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"structure file {path!r} does not exist")
    try:
        atoms = ase.io.read(path)
    except Exception as exc:  # ase raises many types
        raise ValueError(f"ase cannot read {path!r} as a structure file: {exc}") from None
    cell = np.asarray(atoms.cell)
    if atoms.cell.rank < 3 or np.any(np.abs(cell.sum(axis=0) - np.diag(cell)) > 1e-6 * np.abs(cell).max()):
        raise ValueError(
            f"{path!r} needs an orthogonal cell with the beam along z; make an orthogonal supercell with ase first"
        )
    atoms.pbc = True
    atoms.wrap()
    return Crystal(os.path.splitext(os.path.basename(path))[0], atoms, "file")


# Element pools for the random prototypes (common, well-tabulated, no noble gases).
_CATIONS = ["Li", "Na", "K", "Mg", "Ca", "Sr", "Ba", "Zn", "Cd", "Ni", "Co", "Fe", "Mn", "Cu", "Al", "Ga", "In"]
_ANIONS = ["O", "S", "Se", "Te", "N", "P", "As", "Sb", "F", "Cl", "Br", "I"]
_B_SITE = ["Ti", "Zr", "Nb", "Ta", "Mn", "Fe", "Co", "Ni", "Al", "Ga", "Sn", "Hf"]
_METALS = ["Al", "Cu", "Ni", "Ag", "Au", "Pt", "Pd", "Fe", "Cr", "Mo", "W", "V", "Nb", "Ta", "Pb", "Rh", "Ir"]
_GROUP_IV = ["C", "Si", "Ge", "Sn"]


def _radius(symbol: str) -> float:
    from ase.data import atomic_numbers, covalent_radii

    return float(covalent_radii[atomic_numbers[symbol]])


def random_cubic(seed: int) -> Crystal:
    """A seeded random cubic crystal from a common prototype with random elements.

    Lattice constants follow the nearest-neighbour geometry of each prototype from ase's covalent
    radii (e.g. rocksalt a = 2(r_A + r_X)), scaled by a random factor in [0.97, 1.03] and clipped
    to [2.8, 6.6] Å, which keeps them within the range real crystals of these types have.

    Parameters
    ----------
    seed : int
        Same seed, same crystal.

    Returns
    -------
    Crystal
    """
    rng = np.random.default_rng(seed)
    proto = str(rng.choice(PROTOTYPES))
    pick = lambda pool: str(rng.choice(pool))  # noqa: E731
    if proto in ("rocksalt", "zincblende", "cscl", "fluorite"):
        elements = [pick(_CATIONS), pick(_ANIONS)]
    elif proto == "perovskite":
        elements = [pick(["Ca", "Sr", "Ba", "La", "K", "Pb"]), pick(_B_SITE), pick(["O", "F"])]
    elif proto == "diamond":
        elements = [pick(_GROUP_IV)]
    else:
        elements = [pick(_METALS)]
    r = [_radius(e) for e in elements]
    a = {
        "rocksalt": lambda: 2 * (r[0] + r[1]),
        "zincblende": lambda: 4 * (r[0] + r[1]) / math.sqrt(3),
        "fluorite": lambda: 4 * (r[0] + r[1]) / math.sqrt(3),
        "cscl": lambda: 2 * (r[0] + r[1]) / math.sqrt(3),
        "perovskite": lambda: 2 * (r[1] + r[2]),
        "bcc": lambda: 4 * r[0] / math.sqrt(3),
        "fcc": lambda: 2 * math.sqrt(2) * r[0],
        "diamond": lambda: 8 * r[0] / math.sqrt(3),
    }[proto]()
    a = float(np.clip(a * rng.uniform(0.97, 1.03), 2.8, 6.6))
    formula = "".join(elements)
    return Crystal(f"{proto}-{formula}", _prototype_atoms(proto, elements, a), proto)


def build_crystal(material: str, *, seed: int = 0) -> Crystal:
    """Resolve a material argument: ``GaAs``, ``SrTiO3``, ``random-cubic`` (seeded) or a file path.

    Raises
    ------
    ValueError
        With one line naming the accepted values when ``material`` is none of these.
    """
    if material in NAMED_MATERIALS:
        return NAMED_MATERIALS[material]()
    if material == "random-cubic":
        return random_cubic(seed)
    if os.path.exists(material):
        return read_structure(material)
    raise ValueError(
        f"unknown material {material!r}: use GaAs, SrTiO3, random-cubic, random-crystal or the path of a structure file ase reads"
    )


def supercell(crystal: Crystal, *, lateral_cells: tuple[int, int], thickness_cells: int | None = None,
              thickness: float | None = None):
    """Repeat a cell laterally and along the beam.

    Parameters
    ----------
    crystal : Crystal
    lateral_cells : (nx, ny)
        Repeats along x and y.
    thickness_cells : int, optional
        Repeats along z.
    thickness : float, optional
        Thickness in Å instead: enough cells are stacked and atoms deeper than ``thickness`` are
        dropped, so the specimen is exactly ``thickness`` thick.

    Returns
    -------
    atoms : ase.Atoms
        The supercell; positions in Å, z = 0 at the entrance surface.
    thickness : float
        Specimen thickness in Å.
    """
    if (thickness_cells is None) == (thickness is None):
        raise ValueError("give exactly one of thickness_cells or thickness (Å)")
    nx, ny = (int(v) for v in lateral_cells)
    if nx < 1 or ny < 1:
        raise ValueError(f"lateral cells must be ≥ 1, got {lateral_cells!r}")
    c = float(crystal.atoms.cell[2, 2])
    if thickness is None:
        if int(thickness_cells) < 1:
            raise ValueError(f"thickness in cells must be ≥ 1, got {thickness_cells!r}")
        nz, t = int(thickness_cells), int(thickness_cells) * c
    else:
        if not thickness > 0:
            raise ValueError(f"thickness must be positive (Å), got {thickness!r}")
        nz, t = math.ceil(thickness / c - 1e-9), float(thickness)
    atoms = crystal.atoms.repeat((nx, ny, nz))
    keep = atoms.positions[:, 2] < t - 1e-9
    atoms = atoms[keep]
    atoms.cell[2, 2] = t
    return atoms, t

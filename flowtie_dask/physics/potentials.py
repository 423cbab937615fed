"""Kirkland projected potentials of periodic cells on a grid (DESIGN §1).

f_e(q) = Σ a_i/(q²+b_i) + Σ c_i·exp(−d_i q²) with q in 1/Å (no 2π), f_e in Å, from the table
shipped as package data (Kirkland 2010, Appendix C). A periodic cell of area S gives
v_z(r) = (47.878 V·Å² / S) · Σ_q Σ_atoms f_e(|q|) exp(2πi q·(r − r_j)) in V·Å.
"""

from __future__ import annotations

import functools
import json
import math
from importlib import resources
from types import ModuleType
from typing import Any

import numpy as np

from ..backend import ifft2
from .constants import KIRKLAND_PREFACTOR
from .optics import spatial_frequencies

__all__ = [
    "kirkland_table",
    "scattering_factor",
    "mean_inner_potential",
    "slice_thicknesses",
    "assign_slices",
    "projected_potential",
]


@functools.lru_cache(maxsize=1)
def kirkland_table() -> dict[str, dict[str, Any]]:
    """The Kirkland parameter table: ``{symbol: {"Z", "a", "b", "c", "d"}}`` (units in the file)."""
    text = resources.files("flowtie_dask.physics").joinpath("data/kirkland_parameters.json").read_text()
    return json.loads(text)["elements"]


def _params(symbol: str) -> dict[str, Any]:
    table = kirkland_table()
    if symbol not in table:
        raise ValueError(f"element {symbol!r} is not in the Kirkland table (H to {list(table)[-1]})")
    return table[symbol]


def scattering_factor(symbol: str, q: Any, xp: ModuleType = np):
    """Electron scattering factor f_e(q) of one element.

    Parameters
    ----------
    symbol : str
        Element symbol, e.g. ``"Ga"``.
    q : array-like
        Spatial frequency |q| in 1/Å (no 2π), any shape.

    Returns
    -------
    ndarray, same shape as q, float64
        f_e in Å.
    """
    p = _params(symbol)
    q2 = xp.asarray(q, dtype=xp.float64) ** 2
    f = xp.zeros_like(q2)
    for a, b in zip(p["a"], p["b"]):
        f = f + a / (q2 + b)
    for c, d in zip(p["c"], p["d"]):
        f = f + c * xp.exp(-d * q2)
    return f


def mean_inner_potential(atoms) -> float:
    """Mean inner potential V0 = 47.878·Σ_atoms f_e(0) / cell volume.

    Parameters
    ----------
    atoms : ase.Atoms
        A periodic cell.

    Returns
    -------
    float
        V0 in V (Si 13.9, GaAs 15.3, SrTiO3 22.3).
    """
    f0 = sum(float(scattering_factor(s, 0.0)) for s in atoms.get_chemical_symbols())
    return KIRKLAND_PREFACTOR * f0 / float(atoms.get_volume())


def slice_thicknesses(thickness: float, slice_thickness: float) -> np.ndarray:
    """Split a specimen into equal slices no thicker than ``slice_thickness``.

    Parameters
    ----------
    thickness : float
        Specimen thickness in Å.
    slice_thickness : float
        Largest slice thickness in Å.

    Returns
    -------
    ndarray, shape (n_slices,)
        Slice thicknesses in Å (all equal, summing to ``thickness``).
    """
    if not thickness > 0:
        raise ValueError(f"thickness must be positive (Å), got {thickness!r}")
    if not slice_thickness > 0:
        raise ValueError(f"slice thickness must be positive (Å), got {slice_thickness!r}")
    n = max(1, math.ceil(thickness / slice_thickness - 1e-9))
    return np.full(n, thickness / n)


def assign_slices(z: np.ndarray, dz: np.ndarray, *, tol: float = 1e-6) -> np.ndarray:
    """Slice index of each atom from its depth (atoms on a boundary go to the deeper slice).

    Parameters
    ----------
    z : ndarray, shape (n_atoms,)
        Atom depths in Å, 0 at the entrance surface.
    dz : ndarray, shape (n_slices,)
        Slice thicknesses in Å.

    Returns
    -------
    ndarray, shape (n_atoms,), int
        Index in [0, n_slices).
    """
    edges = np.concatenate([[0.0], np.cumsum(dz)])
    idx = np.searchsorted(edges, np.asarray(z) + tol, side="right") - 1
    return np.clip(idx, 0, len(dz) - 1)


def projected_potential(
    positions: np.ndarray,
    symbols: list[str],
    *,
    cell: tuple[float, float],
    gpts: tuple[int, int],
    slice_index: np.ndarray | None = None,
    n_slices: int = 1,
    xp: ModuleType = np,
):
    """Projected potential of each slice of a periodic cell, by Fourier synthesis.

    Parameters
    ----------
    positions : ndarray, shape (n_atoms, 2 or 3)
        Atom positions in Å; only x (first grid axis) and y are used.
    symbols : list of str, length n_atoms
        Element symbols.
    cell : (Lx, Ly)
        Lateral cell lengths in Å (the grid spans exactly one period).
    gpts : (Nx, Ny)
        Grid size; sampling = (Lx/Nx, Ly/Ny) Å.
    slice_index : ndarray, shape (n_atoms,), optional
        Slice of each atom (from :func:`assign_slices`); all in slice 0 when omitted.
    n_slices : int
        Number of slices.

    Returns
    -------
    ndarray, shape (n_slices, Nx, Ny), float64
        v_z of each slice in V·Å (no band limit on the potential itself).
    """
    positions = np.asarray(positions, dtype=np.float64)
    symbols = list(symbols)
    if slice_index is None:
        slice_index = np.zeros(len(symbols), dtype=int)
    nx, ny = int(gpts[0]), int(gpts[1])
    lx, ly = float(cell[0]), float(cell[1])
    kx, ky = spatial_frequencies((nx, ny), (lx / nx, ly / ny), xp)
    k = xp.sqrt(kx**2 + ky**2)
    kx1, ky1 = kx[:, 0], ky[0, :]
    fe = {s: scattering_factor(s, k, xp) for s in sorted(set(symbols))}
    out = xp.zeros((n_slices, nx, ny), dtype=xp.complex128)
    sym_arr = np.asarray(symbols)
    for m in range(n_slices):
        for s, f in fe.items():
            sel = np.nonzero((slice_index == m) & (sym_arr == s))[0]
            if sel.size == 0:
                continue
            xy = xp.asarray(positions[sel, :2])
            ex = xp.exp(-2j * math.pi * xy[:, 0:1] * kx1[None, :])  # (n, Nx)
            ey = xp.exp(-2j * math.pi * xy[:, 1:2] * ky1[None, :])  # (n, Ny)
            out[m] += f * (ex.T @ ey)
    out *= KIRKLAND_PREFACTOR / (lx * ly) * (nx * ny)
    return ifft2(out).real

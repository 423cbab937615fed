"""Planning a simulated series: everything shared by all scan positions, built once (:func:`plan_simulation`).

The plan holds the supercell, potential slices and transmission functions (frozen-phonon configurations
drawn once, so chunking never changes the result), the three probes, the propagator, the store metadata
and the ground-truth projected phase, as host NumPy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .. import __version__
from ..physics.constants import interaction_constant, wavelength
from ..physics.optics import Aberrations, antialias_mask, defocus_to_c10, fresnel_propagator, probe_fourier
from ..physics.potentials import assign_slices, projected_potential, slice_thicknesses
from ..store import ScanMetadata
from .crystals import build_crystal, supercell
from .random_structures import decorate, random_crystal
from .multislice import transmission_functions
from .parameters import SimulationParameters

if TYPE_CHECKING:  # ase is imported where a crystal is built (simulate.crystals)
    import ase

__all__ = ["SimulationPlan", "plan_simulation"]


@dataclass
class SimulationPlan:
    """Everything shared by all scan positions of one simulated series (host NumPy arrays).

    Attributes
    ----------
    params : SimulationParameters
    name : str
        Crystal name.
    atoms : ase.Atoms
        The supercell (static positions).
    thickness : float
        Specimen thickness in Å.
    cell : (Lx, Ly)
        Supercell size in Å.
    sampling : (dx, dy)
        Simulation pixel size in Å (= object-grid pixel of the truth).
    slice_thickness : ndarray, shape (n_slices,)
        Å.
    transmissions : ndarray, shape (C, n_slices, Nx, Ny), complex64
    propagator : ndarray, shape (Nx, Ny), complex64
    probes : ndarray, shape (3, Nx, Ny), complex64
        Probe spectra for Δf = −Δz, 0, +Δz.
    projected_phase : ndarray, shape (Nx, Ny), float64
        σ·Σ v_z (configuration average) in rad.
    metadata : ScanMetadata
    """

    params: SimulationParameters
    name: str
    atoms: ase.Atoms
    thickness: float
    cell: tuple[float, float]
    sampling: tuple[float, float]
    slice_thickness: np.ndarray
    transmissions: np.ndarray
    propagator: np.ndarray
    probes: np.ndarray
    projected_phase: np.ndarray
    metadata: ScanMetadata = field(repr=False)

    @property
    def scan_shape(self) -> tuple[int, int]:
        """(Rx, Ry)."""
        return self.params.scan_pixels

    @property
    def detector_shape(self) -> tuple[int, int]:
        """(Qx, Qy)."""
        return self.params.detector_pixels

    @property
    def scan_step(self) -> tuple[float, float]:
        """Scan step in Å."""
        return self.metadata.scan_step

    def positions(self, xs: slice, ys: slice) -> np.ndarray:
        """Scan positions of a block, shape (bx·by, 2), in Å (row-major over x then y)."""
        ix, iy = np.meshgrid(np.arange(self.scan_shape[0])[xs], np.arange(self.scan_shape[1])[ys], indexing="ij")
        return np.stack([ix.ravel() * self.scan_step[0], iy.ravel() * self.scan_step[1]], axis=1)


def plan_simulation(params: SimulationParameters) -> SimulationPlan:
    """Build the supercell, potential slices, probes and metadata of a simulated series.

    Parameters
    ----------
    params : SimulationParameters

    Returns
    -------
    SimulationPlan
    """
    randomised = params.material == "random-crystal"
    crystal = random_crystal(params.seed) if randomised else build_crystal(params.material, seed=params.seed)
    lateral = params.lateral_cells
    if params.lateral_size is not None:
        lateral = tuple(max(1, int(round(params.lateral_size / float(crystal.atoms.cell[i, i])))) for i in (0, 1))
    atoms, thickness = supercell(crystal, lateral_cells=lateral,
                                 thickness_cells=params.thickness_cells, thickness=params.thickness)
    changes = {}
    if randomised:  # substitutions and vacancy columns need the lateral supercell
        atoms, changes = decorate(atoms, params.seed)
    cell = (float(atoms.cell[0, 0]), float(atoms.cell[1, 1]))
    gpts = params.gpts
    sampling = (cell[0] / gpts[0], cell[1] / gpts[1])
    dz = slice_thicknesses(thickness, params.slice_thickness)
    symbols = atoms.get_chemical_symbols()
    sigma = interaction_constant(params.energy)
    rng = np.random.default_rng([params.seed, 1])
    potentials = []
    for c in range(params.frozen_phonons):
        pos = atoms.positions.copy()
        if params.frozen_phonons > 1 and params.phonon_sigma > 0:
            pos += rng.normal(scale=params.phonon_sigma, size=pos.shape)
        idx = assign_slices(np.clip(pos[:, 2], 0, thickness), dz)
        potentials.append(projected_potential(pos, symbols, cell=cell, gpts=gpts, slice_index=idx, n_slices=len(dz)))
    potentials = np.stack(potentials)  # (C, S, Nx, Ny)
    transmissions = transmission_functions(potentials, sigma)
    propagator = fresnel_propagator(gpts, sampling, energy=params.energy, thickness=float(dz[0]),
                                    band_limit=params.band_limit).astype(np.complex64)
    defocus = (-params.defocus_step, 0.0, params.defocus_step)
    probes = np.stack([
        probe_fourier(gpts, sampling, energy=params.energy, semiangle=params.semiangle,
                      aberrations=Aberrations(C10=defocus_to_c10(df), C30=params.cs), edge=params.aperture_edge)
        for df in defocus
    ]).astype(np.complex64)
    probes *= antialias_mask(gpts, sampling, fraction=params.band_limit).astype(np.float32)  # same band limit as the waves
    projected_phase = sigma * potentials.sum(axis=1).mean(axis=0)
    covering = (cell[0] / params.scan_pixels[0], cell[1] / params.scan_pixels[1])
    scan_step = covering if params.scan_step is None else tuple(params.scan_step)
    periodic = all(abs(s - c) <= 1e-9 * c for s, c in zip(scan_step, covering))
    qx, qy = params.detector_pixels
    electrons = params.dose * scan_step[0] * scan_step[1] if params.dose else None
    provenance = {
        "simulator": "flowtie-dask multislice",
        "version": __version__,
        "material": crystal.name,
        "formula": crystal.atoms.get_chemical_formula(),
        "prototype": crystal.prototype,
        "defects": changes,
        "lattice_A": [float(v) for v in np.diag(crystal.atoms.cell)],
        "lateral_cells": list(lateral),
        "thickness_A": thickness,
        "n_slices": int(len(dz)),
        "slice_thickness_A": float(dz[0]),
        "gpts": list(gpts),
        "sampling_A": list(sampling),
        "band_limit": params.band_limit,
        "frozen_phonons": params.frozen_phonons,
        "phonon_sigma_A": params.phonon_sigma if params.frozen_phonons > 1 else 0.0,
        "dose_e_per_A2": params.dose,
        "electrons_per_pattern": electrons,
        "seed": params.seed,
        "wavelength_A": wavelength(params.energy),
        "sigma_rad_per_VA": sigma,
    }
    metadata = ScanMetadata(
        energy=params.energy,
        semiangle=params.semiangle,
        defocus=defocus,
        scan_step=scan_step,
        detector_sampling=(1.0 / cell[0], 1.0 / cell[1]),
        detector_center=(qx // 2, qy // 2),
        aberrations={"C30": params.cs} if params.cs else {},
        aperture_edge=params.aperture_edge,
        periodic=periodic,
        provenance=provenance,
    )
    return SimulationPlan(params, crystal.name, atoms, thickness, cell, sampling, dz, transmissions,
                          propagator, probes, projected_phase, metadata)

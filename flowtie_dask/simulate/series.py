"""A 4D-STEM defocus series of a crystal: plan once, simulate scan blocks anywhere, write a store.

:func:`plan_simulation` builds everything shared by all scan positions (supercell, potential
slices, transmission functions, probes, propagator, metadata, truth); :func:`simulate_block` is the
per-block computation (NumPy or CuPy) that Dask maps over scan chunks in :func:`simulate_series`;
:func:`simulate_to_store` writes the scan store with its truth. Chunking never changes the result:
frozen-phonon configurations are drawn once per plan and shot noise is seeded per scan position.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .. import __version__
from ..backend import asnumpy, get_array_module
from ..physics.constants import interaction_constant, wavelength
from ..physics.optics import Aberrations, antialias_mask, defocus_to_c10, fresnel_propagator, probe_fourier
from ..physics.potentials import assign_slices, projected_potential, slice_thicknesses
from ..store import ScanMetadata, default_chunks, write_scan_store, write_truth
from .crystals import build_crystal, supercell
from .multislice import poisson_noise, simulate_positions, transmission_functions

__all__ = [
    "SimulationParameters",
    "SimulationPlan",
    "plan_simulation",
    "simulate_block",
    "simulate_series",
    "simulate_to_store",
]


def _as_pair(v) -> tuple[int, int]:
    if np.ndim(v) == 0:
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


@dataclass(frozen=True)
class SimulationParameters:
    """Inputs of a simulated defocus series (units: Å, eV, mrad, e⁻/Å²).

    Attributes
    ----------
    material : str
        ``GaAs``, ``SrTiO3``, ``random-cubic`` or a structure file path.
    lateral_cells : (int, int)
        Unit cells along x and y; the scan covers this supercell once (periodic).
    lateral_size : float or None
        Instead of ``lateral_cells``: as many cells as come closest to this width in Å (at least one),
        so crystals of different lattice constants get similar sampling (training sets).
    thickness_cells : int or None
        Specimen thickness in unit cells along the beam …
    thickness : float or None
        … or in Å (exactly one of the two).
    energy : float
        eV (300e3).
    semiangle : float
        Convergence semi-angle in mrad.
    defocus_step : float
        Δz in Å: the series is Δf = −Δz, 0, +Δz (Δf = −C10, positive = underfocus).
    cs : float
        Spherical aberration C30 in Å.
    aperture_edge : float
        Soft aperture edge in mrad (0 = hard).
    detector_pixels : int or (int, int)
        Detector pixels (Qx, Qy), a centred crop of the simulation grid.
    gpts : int or (int, int) or None
        Simulation grid over the supercell (default: the detector size, so the exit-wave pixel is
        the supercell divided by the detector pixels).
    scan_pixels : int or (int, int)
        Scan positions (Rx, Ry) spread evenly over the supercell from (0, 0).
    slice_thickness : float
        Largest slice thickness in Å (slices are equal and fit the specimen exactly).
    dose : float or None
        Electron dose in e⁻/Å² for Poisson noise; None for noise-free intensities.
    frozen_phonons : int
        Configurations averaged incoherently (1 = static lattice).
    phonon_sigma : float
        RMS displacement per direction in Å for frozen phonons.
    seed : int
        Seeds random-cubic structures, phonon displacements and noise.
    band_limit : float
        Anti-aliasing band limit as a fraction of Nyquist (2/3).
    probe_frame : bool
        Also store the probe-frame phase at focus (training truth).
    device : {"cpu", "gpu", "auto"}
        Array backend of the workers.
    """

    material: str = "GaAs"
    lateral_cells: tuple[int, int] = (2, 2)
    lateral_size: float | None = None
    thickness_cells: int | None = 1
    thickness: float | None = None
    energy: float = 300e3
    semiangle: float = 20.0
    defocus_step: float = 20.0
    cs: float = 0.0
    aperture_edge: float = 0.0
    detector_pixels: Any = 64
    gpts: Any = None
    scan_pixels: Any = 64
    slice_thickness: float = 1.5
    dose: float | None = None
    frozen_phonons: int = 1
    phonon_sigma: float = 0.08
    seed: int = 0
    band_limit: float = 2.0 / 3.0
    probe_frame: bool = False
    device: str = "cpu"

    def __post_init__(self):
        if self.thickness is not None:
            object.__setattr__(self, "thickness_cells", None)
        object.__setattr__(self, "lateral_cells", _as_pair(self.lateral_cells))
        object.__setattr__(self, "detector_pixels", _as_pair(self.detector_pixels))
        object.__setattr__(self, "scan_pixels", _as_pair(self.scan_pixels))
        object.__setattr__(self, "gpts", _as_pair(self.gpts) if self.gpts is not None else self.detector_pixels)
        checks = [
            (self.energy > 0, f"energy must be positive (eV), got {self.energy}"),
            (self.semiangle > 0, f"semi-angle must be positive (mrad), got {self.semiangle}"),
            (self.defocus_step > 0, f"defocus step must be positive (Å), got {self.defocus_step}"),
            (min(self.scan_pixels) >= 2, f"scan pixels must be ≥ 2, got {self.scan_pixels}"),
            (min(self.detector_pixels) >= 4, f"detector pixels must be ≥ 4, got {self.detector_pixels}"),
            (all(g >= d for g, d in zip(self.gpts, self.detector_pixels)),
             f"the simulation grid {self.gpts} must be at least the detector {self.detector_pixels}"),
            (self.slice_thickness > 0, f"slice thickness must be positive (Å), got {self.slice_thickness}"),
            (self.dose is None or self.dose > 0, f"dose must be positive (e/Å²), got {self.dose}"),
            (self.frozen_phonons >= 1, f"frozen phonons must be ≥ 1, got {self.frozen_phonons}"),
            (self.phonon_sigma >= 0, f"phonon sigma must be ≥ 0 (Å), got {self.phonon_sigma}"),
            (self.device in ("cpu", "gpu", "auto"), f"device must be cpu, gpu or auto, got {self.device!r}"),
            (self.lateral_size is None or self.lateral_size > 0, f"lateral size must be positive (Å), got {self.lateral_size}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)


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
    atoms: Any
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
    crystal = build_crystal(params.material, seed=params.seed)
    lateral = params.lateral_cells
    if params.lateral_size is not None:
        lateral = tuple(max(1, int(round(params.lateral_size / float(crystal.atoms.cell[i, i])))) for i in (0, 1))
    atoms, thickness = supercell(crystal, lateral_cells=lateral,
                                 thickness_cells=params.thickness_cells, thickness=params.thickness)
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
    scan_step = (cell[0] / params.scan_pixels[0], cell[1] / params.scan_pixels[1])
    qx, qy = params.detector_pixels
    electrons = params.dose * scan_step[0] * scan_step[1] if params.dose else None
    provenance = {
        "simulator": "flowtie-dask multislice",
        "version": __version__,
        "material": crystal.name,
        "formula": crystal.atoms.get_chemical_formula(),
        "prototype": crystal.prototype,
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
        periodic=True,
        provenance=provenance,
    )
    return SimulationPlan(params, crystal.name, atoms, thickness, cell, sampling, dz, transmissions,
                          propagator, probes, projected_phase, metadata)


def simulate_block(plan: SimulationPlan, xs: slice, ys: slice, *, batch_size: int | None = None):
    """Simulate one rectangular block of scan positions (the unit of work a Dask task runs).

    Parameters
    ----------
    plan : SimulationPlan
    xs, ys : slice
        Scan rows and columns of the block (step 1).
    batch_size : int, optional
        Positions per vectorised batch; default bounds the wave stack to about 32 MB.

    Returns
    -------
    intensity : ndarray, shape (3, bx, by, Qx, Qy), float32
        On the host (NumPy), noisy when the plan has a dose.
    probe_frame_phase : ndarray, shape (bx, by, Qx, Qy), float32, or None
        arg Ψ at focus, when ``plan.params.probe_frame``.
    """
    p = plan.params
    device = p.device
    if device == "auto":
        from ..backend import cupy_available

        device = "gpu" if cupy_available() else "cpu"
    xp = get_array_module(device=device)
    pos = plan.positions(xs, ys)
    bx = len(range(*xs.indices(plan.scan_shape[0])))
    by = len(range(*ys.indices(plan.scan_shape[1])))
    if batch_size is None:
        batch_size = max(1, 2**22 // (plan.probes.shape[-1] * plan.probes.shape[-2]))
    inten, pf = simulate_positions(
        xp.asarray(pos),
        probes=xp.asarray(plan.probes),
        transmissions=xp.asarray(plan.transmissions),
        propagator=xp.asarray(plan.propagator),
        sampling=plan.sampling,
        detector_shape=plan.detector_shape,
        probe_frame_index=1 if p.probe_frame else None,
        batch_size=batch_size,
    )
    if p.dose:
        electrons = plan.metadata.provenance["electrons_per_pattern"]
        ix, iy = np.meshgrid(np.arange(plan.scan_shape[0])[xs], np.arange(plan.scan_shape[1])[ys], indexing="ij")
        for d in range(inten.shape[0]):
            keys = np.stack([np.full(ix.size, d), ix.ravel(), iy.ravel()], axis=1)
            inten[d] = poisson_noise(inten[d], electrons=electrons, seed=p.seed, keys=keys)
    inten = asnumpy(inten).reshape((3, bx, by) + plan.detector_shape)
    phase = None
    if pf is not None:
        phase = np.angle(asnumpy(pf)).astype(np.float32).reshape((bx, by) + plan.detector_shape)
    return inten, phase


def _block_task(plan, xs, ys):
    return simulate_block(plan, xs, ys)


def simulate_series(plan: SimulationPlan, *, chunks: tuple[int, int] | None = None):
    """Lazy Dask arrays of the whole series, one task per scan block.

    Parameters
    ----------
    plan : SimulationPlan
    chunks : (cx, cy), optional
        Scan positions per block (default: :func:`flowtie_dask.store.default_chunks`).

    Returns
    -------
    intensity : dask.array.Array, shape (3, Rx, Ry, Qx, Qy), float32
        Chunks (3, cx, cy, Qx, Qy).
    probe_frame_phase : dask.array.Array, shape (Rx, Ry, Qx, Qy), float32, or None
        Computed by the same tasks as ``intensity`` (no work is repeated when both are stored).
    """
    import dask
    import dask.array as da

    rx, ry = plan.scan_shape
    qx, qy = plan.detector_shape
    cx, cy = chunks if chunks else default_chunks(plan.scan_shape, plan.detector_shape)
    plan_key = dask.delayed(plan, pure=True)
    rows_i, rows_p = [], []
    for x0 in range(0, rx, cx):
        row_i, row_p = [], []
        for y0 in range(0, ry, cy):
            xs, ys = slice(x0, min(x0 + cx, rx)), slice(y0, min(y0 + cy, ry))
            bx, by = xs.stop - xs.start, ys.stop - ys.start
            task = dask.delayed(_block_task, nout=2, pure=True)(plan_key, xs, ys)
            row_i.append(da.from_delayed(task[0], shape=(3, bx, by, qx, qy), dtype=np.float32))
            if plan.params.probe_frame:
                row_p.append(da.from_delayed(task[1], shape=(bx, by, qx, qy), dtype=np.float32))
        rows_i.append(row_i)
        rows_p.append(row_p)
    intensity = da.concatenate([da.concatenate(r, axis=2) for r in rows_i], axis=1)
    phase = None
    if plan.params.probe_frame:
        phase = da.concatenate([da.concatenate(r, axis=1) for r in rows_p], axis=0)
    return intensity, phase


def simulate_to_store(
    params: SimulationParameters,
    out: str,
    *,
    chunks: tuple[int, int] | None = None,
    client: Any = None,
    progress: bool = True,
    overwrite: bool = False,
) -> str:
    """Simulate a defocus series and write it, with truth, as a scan store.

    Parameters
    ----------
    params : SimulationParameters
    out : str
        Destination folder (``*.zarr``); written atomically (see
        :func:`flowtie_dask.store.write_scan_store`).
    chunks : (cx, cy), optional
        Scan positions per chunk of the store and per Dask task.
    client : distributed.Client, optional
        Runs the tasks on this cluster; None uses in-process threads.
    progress : bool
        Progress bar on stderr.
    overwrite : bool
        Replace an existing store.

    Returns
    -------
    str
        The absolute path of the store.
    """
    from ..cluster import compute

    plan = plan_simulation(params)
    chunks = tuple(chunks) if chunks else default_chunks(plan.scan_shape, plan.detector_shape)
    intensity, phase = simulate_series(plan, chunks=chunks)
    import dask.array as da

    with write_scan_store(out, plan.metadata, scan_shape=plan.scan_shape, detector_shape=plan.detector_shape,
                          chunks=chunks, overwrite=overwrite) as group:
        truth = write_truth(
            group, plan.projected_phase, pixel_size=plan.sampling, origin=(0.0, 0.0),
            probe_frame_chunks=chunks if params.probe_frame else None,
            attrs={"thickness_A": plan.thickness, "material": plan.name, "periodic_cell_A": list(plan.cell)},
        )
        sources, targets = [intensity], [group["intensity"]]
        if phase is not None:
            sources.append(phase)
            targets.append(truth["probe_frame_phase"])
        stored = da.store(sources, targets, lock=False, compute=False)
        compute(stored, client=client, progress=progress)
        group.attrs["provenance"] = {**plan.metadata.provenance, "parameters": _json_params(params)}
    return os.path.abspath(out)


def _json_params(params: SimulationParameters) -> dict:
    d = asdict(params)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


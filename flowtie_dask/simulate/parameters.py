"""The inputs of a simulated defocus series: :class:`SimulationParameters`, checked when it is made.

Per-axis counts (``lateral_cells``, ``detector_pixels``, ``gpts``, ``scan_pixels``) are read by
:func:`flowtie_dask.pairs.pair`: one number serves both axes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..pairs import pair

__all__ = ["SimulationParameters"]


@dataclass(frozen=True)
class SimulationParameters:
    """Inputs of a simulated defocus series (units: Å, eV, mrad, e⁻/Å²).

    Attributes
    ----------
    material : str
        ``GaAs``, ``SrTiO3``, ``random-cubic``, ``random-crystal`` (:mod:`.random_structures`) or a structure
        file path.
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
        Scan positions (Rx, Ry) spread evenly over the supercell from (0, 0) …
    scan_step : float or (float, float) or None
        … or this far apart (Å) from (0, 0): a window of the periodic supercell (the scan is then not periodic
        unless it spans the supercell exactly). Lets the detector sampling (1/supercell) be fine while the scan
        stays small.
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
    scan_step: Any = None
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
        for name in ("lateral_cells", "detector_pixels", "scan_pixels"):
            object.__setattr__(self, name, pair(getattr(self, name), name=name, convert=int))
        if self.scan_step is not None:
            object.__setattr__(self, "scan_step", pair(self.scan_step, name="scan_step", convert=float))
        object.__setattr__(self, "gpts", pair(self.gpts, name="gpts", convert=int) if self.gpts is not None
                           else self.detector_pixels)
        checks = [
            (self.energy > 0, f"energy must be positive (eV), got {self.energy}"),
            (self.semiangle > 0, f"semi-angle must be positive (mrad), got {self.semiangle}"),
            (self.defocus_step > 0, f"defocus step must be positive (Å), got {self.defocus_step}"),
            (min(self.scan_pixels) >= 2, f"scan pixels must be ≥ 2, got {self.scan_pixels}"),
            (min(self.detector_pixels) >= 4, f"detector pixels must be ≥ 4, got {self.detector_pixels}"),
            (all(g >= d for g, d in zip(self.gpts, self.detector_pixels)),
             f"the simulation grid {self.gpts} must be at least the detector {self.detector_pixels}"),
            (self.scan_step is None or min(self.scan_step) > 0, f"scan step must be positive (Å), got {self.scan_step}"),
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

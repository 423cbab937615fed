"""Physics: constants, electron optics and Kirkland projected potentials (no dask, no zarr)."""

from .constants import interaction_constant, wavelength
from .optics import (
    DEFOCUS_CONVENTION,
    Aberrations,
    aperture,
    c10_to_defocus,
    defocus_to_c10,
    fresnel_propagator,
    probe_fourier,
    probe_real,
)
from .potentials import mean_inner_potential, projected_potential, scattering_factor

__all__ = [
    "DEFOCUS_CONVENTION",
    "Aberrations",
    "aperture",
    "c10_to_defocus",
    "defocus_to_c10",
    "fresnel_propagator",
    "interaction_constant",
    "mean_inner_potential",
    "probe_fourier",
    "probe_real",
    "projected_potential",
    "scattering_factor",
    "wavelength",
]

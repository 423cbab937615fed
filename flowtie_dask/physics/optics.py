"""Electron optics on a periodic real-space grid: frequencies, aperture, aberrations, probe,
Fresnel propagator and the anti-aliasing band limit.

Conventions (DESIGN §1–2): lengths in Å, angles in mrad, spatial frequencies in 1/Å without 2π,
probe in reciprocal space P̃(k) = A(k)·exp(−iχ(k)) with
χ(k) = πλ(C10 + C12·cos 2(φ−φ12))|k|² + (π/2)·C30·λ³|k|⁴, and defocus as users state it
Δf = −C10 (positive = underfocus). All functions take an array module ``xp`` (NumPy or CuPy,
see :mod:`flowtie_dask.backend`) and never import dask.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ..backend import ifft2
from .constants import wavelength

__all__ = [
    "Aberrations",
    "defocus_to_c10",
    "c10_to_defocus",
    "spatial_frequencies",
    "antialias_mask",
    "aperture",
    "aberration_phase",
    "probe_fourier",
    "probe_real",
    "fresnel_propagator",
    "shift_phase",
]

#: The defocus sign convention written into every store.
DEFOCUS_CONVENTION = "defocus = -C10 (Kirkland/abTEM; positive = underfocus)"


def defocus_to_c10(defocus: float) -> float:
    """Convert defocus Δf as users state it (positive = underfocus) to C10 = −Δf, both in Å."""
    return -float(defocus)


def c10_to_defocus(c10: float) -> float:
    """Convert C10 (Å) to defocus Δf = −C10 (Å)."""
    return -float(c10)


@dataclass(frozen=True)
class Aberrations:
    """Probe aberrations in Krivanek polar notation (lengths in Å, angles in rad).

    Attributes
    ----------
    C10 : float
        Defocus coefficient (Å); Δf = −C10.
    C12, phi12 : float
        Two-fold astigmatism (Å) and its azimuth (rad).
    C30 : float
        Spherical aberration Cs (Å); 1 mm = 1e7 Å.
    """

    C10: float = 0.0
    C12: float = 0.0
    phi12: float = 0.0
    C30: float = 0.0

    def to_dict(self) -> dict[str, float]:
        """Return the coefficients as a JSON-able dict (Å, rad)."""
        return {k: float(v) for k, v in asdict(self).items()}


def spatial_frequencies(shape: tuple[int, int], sampling: tuple[float, float], xp: ModuleType = np,
                        offset: tuple[float, float] = (0.0, 0.0)):
    """Frequency grids of a real-space grid, unshifted (FFT order).

    Parameters
    ----------
    shape : (Nx, Ny)
        Grid size in pixels.
    sampling : (dx, dy)
        Pixel size in Å.
    xp : module
        ``numpy`` or ``cupy``.
    offset : (float, float)
        Added to every frequency, in 1/Å (a detector whose zero frequency sits off its nominal
        centre pixel: q_true = fftfreq + offset).

    Returns
    -------
    kx, ky : ndarray, shape (Nx, 1) and (1, Ny)
        Frequencies in 1/Å (no 2π), broadcastable to (Nx, Ny), float64.
    """
    kx = xp.fft.fftfreq(int(shape[0]), d=float(sampling[0]))[:, None] + float(offset[0])
    ky = xp.fft.fftfreq(int(shape[1]), d=float(sampling[1]))[None, :] + float(offset[1])
    return kx, ky


def antialias_mask(
    shape: tuple[int, int], sampling: tuple[float, float], *, fraction: float = 2.0 / 3.0, xp: ModuleType = np
):
    """Circular band limit at ``fraction`` of the Nyquist frequency (the usual 2/3 rule).

    Parameters
    ----------
    shape, sampling : (Nx, Ny), (dx, dy) in Å
    fraction : float
        Cut-off as a fraction of min(1/(2dx), 1/(2dy)); values ≥ 1.5 disable the limit.

    Returns
    -------
    ndarray, shape (Nx, Ny), float64
        1 inside the limit, 0 outside.
    """
    kx, ky = spatial_frequencies(shape, sampling, xp)
    kmax = fraction * min(0.5 / sampling[0], 0.5 / sampling[1])
    return ((kx**2 + ky**2) <= kmax**2).astype(xp.float64)


def aperture(shape: tuple[int, int], sampling: tuple[float, float], *, energy: float, semiangle: float,
             edge: float = 0.0, xp: ModuleType = np, offset: tuple[float, float] = (0.0, 0.0)):
    """Condenser aperture A(k) in FFT order.

    Parameters
    ----------
    shape, sampling : (Nx, Ny), (dx, dy) in Å
    energy : float
        Beam energy in eV.
    semiangle : float
        Convergence semi-angle α in mrad.
    edge : float
        Width of a linear soft edge in mrad (0 = hard aperture, 1 inside λ|k| ≤ α).

    Returns
    -------
    ndarray, shape (Nx, Ny), float64 in [0, 1]
    """
    if not semiangle > 0:
        raise ValueError(f"semiangle must be positive (mrad), got {semiangle!r}")
    lam = wavelength(energy)
    kx, ky = spatial_frequencies(shape, sampling, xp, offset)
    alpha = xp.sqrt(kx**2 + ky**2) * lam * 1e3  # mrad
    if edge > 0:
        return xp.clip((semiangle - alpha) / edge + 0.5, 0.0, 1.0)
    return (alpha <= semiangle).astype(xp.float64)


def aberration_phase(
    shape: tuple[int, int],
    sampling: tuple[float, float],
    *,
    energy: float,
    aberrations: Aberrations,
    xp: ModuleType = np,
    offset: tuple[float, float] = (0.0, 0.0),
):
    """Aberration phase χ(k) in rad, FFT order (``offset`` as in :func:`spatial_frequencies`).

    Returns
    -------
    ndarray, shape (Nx, Ny), float64
        χ = πλ(C10 + C12 cos 2(φ−φ12))|k|² + (π/2) C30 λ³ |k|⁴.
    """
    lam = wavelength(energy)
    kx, ky = spatial_frequencies(shape, sampling, xp, offset)
    k2 = kx**2 + ky**2
    phi = xp.arctan2(ky, kx)
    a = aberrations
    c2 = a.C10 + a.C12 * xp.cos(2.0 * (phi - a.phi12))
    return math.pi * lam * c2 * k2 + 0.5 * math.pi * a.C30 * lam**3 * k2**2


def probe_fourier(shape: tuple[int, int], sampling: tuple[float, float], *, energy: float, semiangle: float,
                  aberrations: Aberrations = Aberrations(), edge: float = 0.0, xp: ModuleType = np,
                  offset: tuple[float, float] = (0.0, 0.0)):
    """Probe in reciprocal space, P̃(k) = A(k)·exp(−iχ(k)), normalised so Σ_r |P(r)|² = 1.

    Parameters
    ----------
    shape, sampling : (Nx, Ny), (dx, dy) in Å
        The real-space window the probe lives in.
    energy, semiangle, edge : float
        Beam energy in eV, convergence semi-angle and soft aperture edge width in mrad, as in :func:`aperture`.
    aberrations : Aberrations
        C10 etc. in Å (C10 = −Δf).
    offset : (float, float)
        Frequency offset in 1/Å (see :func:`spatial_frequencies`), for off-centre detectors.

    Returns
    -------
    ndarray, shape (Nx, Ny), complex128
        FFT order; Σ_k |P̃|² = Nx·Ny so that P = ifft2(P̃) has unit norm.
    """
    amp = aperture(shape, sampling, energy=energy, semiangle=semiangle, edge=edge, xp=xp, offset=offset)
    chi = aberration_phase(shape, sampling, energy=energy, aberrations=aberrations, xp=xp, offset=offset)
    p = amp * xp.exp(-1j * chi)
    n = shape[0] * shape[1]
    return p * math.sqrt(n / float((xp.abs(p) ** 2).sum()))


def probe_real(shape, sampling, **kwargs):
    """Real-space probe P(r) centred on the grid origin (pixel (0, 0), periodic).

    Takes the arguments of :func:`probe_fourier`.

    Returns
    -------
    ndarray, shape (Nx, Ny), complex128
        Σ_r |P(r)|² = 1.
    """
    p = probe_fourier(shape, sampling, **kwargs)

    return ifft2(p)


def fresnel_propagator(
    shape: tuple[int, int],
    sampling: tuple[float, float],
    *,
    energy: float,
    thickness: float,
    band_limit: float = 2.0 / 3.0,
    xp: ModuleType = np,
):
    """Fresnel propagator exp(−iπλΔz|k|²) over one slice, times the anti-aliasing band limit.

    Parameters
    ----------
    shape, sampling : (Nx, Ny), (dx, dy) in Å
    energy : float
        eV.
    thickness : float
        Slice thickness Δz in Å.
    band_limit : float
        Fraction of Nyquist kept (see :func:`antialias_mask`); ≥ 1.5 disables it.

    Returns
    -------
    ndarray, shape (Nx, Ny), complex128, FFT order
    """
    lam = wavelength(energy)
    kx, ky = spatial_frequencies(shape, sampling, xp)
    prop = xp.exp(-1j * math.pi * lam * thickness * (kx**2 + ky**2))
    return prop * antialias_mask(shape, sampling, fraction=band_limit, xp=xp)


def shift_phase(positions: Any, shape: tuple[int, int], sampling: tuple[float, float], xp: ModuleType = np):
    """Fourier shift factors exp(−2πi k·r̂) that move a wave to each scan position.

    Parameters
    ----------
    positions : ndarray, shape (B, 2)
        Scan positions r̂ in Å (x along the first grid axis).
    shape, sampling : (Nx, Ny), (dx, dy) in Å

    Returns
    -------
    ndarray, shape (B, Nx, Ny), complex128
        Separable product of the two axis factors (sub-pixel shifts are exact on a periodic grid).
    """
    positions = xp.asarray(positions, dtype=xp.float64)
    kx = xp.fft.fftfreq(int(shape[0]), d=float(sampling[0]))
    ky = xp.fft.fftfreq(int(shape[1]), d=float(sampling[1]))
    ex = xp.exp(-2j * math.pi * positions[:, 0:1] * kx[None, :])
    ey = xp.exp(-2j * math.pi * positions[:, 1:2] * ky[None, :])
    return ex[:, :, None] * ey[:, None, :]

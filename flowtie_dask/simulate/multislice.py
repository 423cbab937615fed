"""Multislice kernels: batched over scan positions, NumPy or CuPy (chosen from the input arrays).

Forward model of DESIGN §2: probe P(r − r̂) (Fourier-shifted, exact for sub-pixel positions on a
periodic cell), per slice transmission exp(iσ v_z) then Fresnel propagation, far field
E(q, r̂) = Σ_r ψ(r; r̂) exp(−2πi q·r). Intensities are normalised so a pattern over the full
detector sums to Σ_r |ψ|² (1 for the unit-norm probe). These functions never import dask or zarr.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backend import fft2, get_array_module, ifft2
from ..physics.optics import shift_phase

__all__ = ["transmission_functions", "multislice", "far_field", "center_crop", "simulate_positions", "poisson_noise"]


def transmission_functions(potential: Any, sigma: float):
    """Slice transmission functions O_m(r) = exp(iσ v_z,m(r)).

    Parameters
    ----------
    potential : ndarray, shape (..., n_slices, Nx, Ny)
        Projected potential per slice in V·Å.
    sigma : float
        Interaction constant in rad/(V·Å).

    Returns
    -------
    ndarray, same shape, complex64
    """
    xp = get_array_module(potential)
    return xp.exp(1j * sigma * potential).astype(xp.complex64)


def multislice(waves: Any, transmissions: Any, propagator: Any) -> Any:
    """Propagate entrance waves through all slices: ψ ← F⁻¹[p·F[O_m ψ]] for m = 1..n.

    Parameters
    ----------
    waves : ndarray, shape (B, Nx, Ny), complex
        Entrance waves in real space.
    transmissions : ndarray, shape (n_slices, Nx, Ny), complex
        O_m(r) per slice.
    propagator : ndarray, shape (Nx, Ny) or (n_slices, Nx, Ny), complex
        Fresnel propagator (FFT order, band limit included) per slice.

    Returns
    -------
    ndarray, shape (B, Nx, Ny), complex
        Exit waves in reciprocal space, i.e. the unnormalised far field E(q) in FFT order.
    """
    n = transmissions.shape[0]
    for m in range(n):
        p = propagator if propagator.ndim == 2 else propagator[m]
        spectrum = fft2(waves * transmissions[m]) * p
        if m < n - 1:
            waves = ifft2(spectrum)
    return spectrum


def far_field(spectrum: Any) -> Any:
    """Unit-sum intensities |E(q)|²/(Nx·Ny) from an unnormalised far field.

    Parameters
    ----------
    spectrum : ndarray, shape (..., Nx, Ny), complex

    Returns
    -------
    ndarray, shape (..., Nx, Ny), float32
        Σ_q I = Σ_r |ψ|² (Parseval).
    """
    xp = get_array_module(spectrum)
    n = spectrum.shape[-1] * spectrum.shape[-2]
    return (xp.abs(spectrum) ** 2 / n).astype(xp.float32)


def center_crop(x: Any, shape: tuple[int, int]) -> Any:
    """fftshift the last two axes (zero frequency to index N//2) and crop a centred window.

    Parameters
    ----------
    x : ndarray, shape (..., Nx, Ny), FFT order
    shape : (Qx, Qy)
        Window size, ≤ (Nx, Ny). The zero frequency lands at (Qx//2, Qy//2), as in py4DSTEM and abTEM.

    Returns
    -------
    ndarray, shape (..., Qx, Qy)
    """
    xp = get_array_module(x)
    nx, ny = x.shape[-2:]
    qx, qy = shape
    if qx > nx or qy > ny:
        raise ValueError(f"detector {shape} is larger than the simulation grid {(nx, ny)}")
    x = xp.fft.fftshift(x, axes=(-2, -1))
    ox, oy = nx // 2 - qx // 2, ny // 2 - qy // 2
    return x[..., ox : ox + qx, oy : oy + qy]




def simulate_positions(
    positions: Any,
    *,
    probes: Any,
    transmissions: Any,
    propagator: Any,
    sampling: tuple[float, float],
    detector_shape: tuple[int, int],
    probe_frame_index: int | None = None,
    batch_size: int | None = None,
):
    """Far-field intensities of a defocus series for a batch of scan positions.

    Vectorised over positions (one FFT call per slice for the whole batch); an optional
    ``batch_size`` bounds memory to about 6·batch_size·Nx·Ny·8 bytes.

    Parameters
    ----------
    positions : ndarray, shape (B, 2)
        Scan positions r̂ in Å (x along the first grid axis), on the simulation cell.
    probes : ndarray, shape (D, Nx, Ny), complex
        Probe spectra P̃ for each defocus (FFT order, unit norm in real space).
    transmissions : ndarray, shape (C, n_slices, Nx, Ny), complex
        Transmission functions of C frozen-phonon configurations (C = 1 without phonons).
    propagator : ndarray, shape (Nx, Ny) or (n_slices, Nx, Ny), complex
    sampling : (dx, dy)
        Simulation pixel size in Å.
    detector_shape : (Qx, Qy)
        Centred crop of the far field recorded by the detector.
    probe_frame_index : int, optional
        Defocus index whose probe-frame wave Ψ(q, r̂) = E(q, r̂)·exp(+2πi q·r̂) is returned too.
    batch_size : int, optional
        Positions per vectorised batch (default: all).

    Returns
    -------
    intensity : ndarray, shape (D, B, Qx, Qy), float32
        Configuration-averaged intensities, centred and cropped; a full detector sums to 1.
    probe_frame : ndarray, shape (B, Qx, Qy), complex64, or None
        Configuration-averaged (coherent) probe-frame wave, scaled so |Ψ|² matches ``intensity``.
    """
    xp = get_array_module(probes)
    positions = xp.asarray(positions, dtype=xp.float64)
    nb = positions.shape[0]
    nd = probes.shape[0]
    nconf = transmissions.shape[0]
    shape = probes.shape[-2:]
    norm = 1.0 / math.sqrt(shape[0] * shape[1])
    batch = nb if not batch_size else int(batch_size)
    out = xp.zeros((nd, nb) + tuple(detector_shape), dtype=xp.float32)
    pf = None
    if probe_frame_index is not None:
        pf = xp.zeros((nb,) + tuple(detector_shape), dtype=xp.complex64)
    for start in range(0, nb, batch):
        pos = positions[start : start + batch]
        shifts = shift_phase(pos, shape, sampling, xp).astype(xp.complex64)
        for d in range(nd):
            entrance = ifft2(shifts * probes[d].astype(xp.complex64))
            for c in range(nconf):
                spectrum = multislice(entrance, transmissions[c], propagator)
                out[d, start : start + batch] += center_crop(far_field(spectrum), detector_shape) / nconf
                if d == probe_frame_index:
                    ramp = xp.conj(shifts)
                    pf[start : start + batch] += center_crop(spectrum * ramp * norm, detector_shape) / nconf
    return out, pf


def poisson_noise(patterns: Any, *, electrons: float, seed: int, keys: np.ndarray) -> Any:
    """Shot noise for a dose: each pattern becomes Poisson(I·electrons)/electrons.

    Each pattern draws from its own generator seeded by ``(seed, *key)``, so the noise of a scan
    position does not depend on how the scan is chunked.

    Parameters
    ----------
    patterns : ndarray, shape (B, Qx, Qy), float
        Unit-sum intensities.
    electrons : float
        Electrons per pattern (dose in e⁻/Å² × scan-step area in Å²).
    seed : int
    keys : ndarray, shape (B, k), int
        Per-pattern identity (e.g. defocus index, scan indices).

    Returns
    -------
    ndarray, shape (B, Qx, Qy), float32
        Noisy intensities on the same scale (counts / electrons).
    """
    if not electrons > 0:
        raise ValueError(f"electrons per pattern must be positive, got {electrons!r}")
    xp = get_array_module(patterns)
    host = np.asarray(patterns.get() if xp is not np else patterns, dtype=np.float64)
    noisy = np.empty(host.shape, dtype=np.float32)
    for i in range(host.shape[0]):
        rng = np.random.default_rng([int(seed)] + [int(k) for k in keys[i]])
        noisy[i] = rng.poisson(np.clip(host[i], 0, None) * electrons) / electrons
    return xp.asarray(noisy)

"""Shared parts of the gradient-descent baselines: steps, torch device, memory estimate and checks,
probe spectra, √I in FFT order, the ε-regularised amplitude, the optimiser loop and GDDivergedError.

Used by the diagonal form (:mod:`.diagonal`), the dense form (:mod:`.dense`) and the store entry point
(:mod:`.store`); the method itself is described in :mod:`flowtie_dask.baselines.gd`.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ... import backend
from ...backend import MEMORY_HEADROOM, available_memory, require_memory  # noqa: F401 (re-exported)
from ...geometry import ReconstructionGeometry
from ...physics.optics import Aberrations, probe_fourier

#: Default step: the majorise–minimise step (plain GD) — see :mod:`flowtie_dask.baselines.gd`.
DEFAULT_LR_GD = 1.0
#: Default Adam step (amplitude units / rad per iteration), if ``optimizer="adam"``.
DEFAULT_LR_ADAM = 0.03
#: Bytes of autograd working memory per pattern pixel during one batch's forward + backward
#: (window gather, product, FFT, |E|, residual and their gradients; measured ≈ 60 B on CPU, rounded up).
AUTOGRAD_BYTES_PER_PIXEL = 96
#: The misfit compares sqrt(|E|² + ε²) with sqrt(I + ε²), ε = AMPLITUDE_EPS · rms(√I). Where the model's
#: far field is zero (the dark field of the flat starting object), d|E|/dE = E/|E| is the direction of FFT
#: round-off: the first steps, and all later ones, then depended on the FFT library (CPU and GPU differed
#: by 20 % in loss). With ε that gradient vanishes instead; the exact object still has zero misfit.
AMPLITUDE_EPS = 1e-3
_MIN_BATCH = 64


# ----------------------------------------------------------------------------------------------------
# device and memory
# ----------------------------------------------------------------------------------------------------
def _torch_device(device: str):
    import torch

    if device in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise RuntimeError("no GPU found: torch sees no CUDA device; use device='cpu' "
                               "(or install a CUDA build of torch on a machine with an NVIDIA GPU)")
        return torch.device("cuda")
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {device!r}: use 'cpu' or 'cuda'")


def gd_memory_estimate(n_patterns: int, detector_shape: tuple[int, int], object_shape: tuple[int, int], *,
                       batch: int) -> int:
    """Bytes a diagonal-A gradient-descent run needs.

    Parameters
    ----------
    n_patterns : int
        Patterns fitted (scan positions × defocus scans used).
    detector_shape : (Qx, Qy)
    object_shape : (Nx, Ny)
    batch : int
        Patterns per forward/backward pass.

    Returns
    -------
    int
        2 × the float32 data (√I plus a transient copy while it is prepared) + ``batch`` patterns of
        autograd buffers (:data:`AUTOGRAD_BYTES_PER_PIXEL` per pixel) + the object, its gradient and the
        optimiser state (complex64, ×8).
    """
    q = int(detector_shape[0]) * int(detector_shape[1])
    data = 2 * 4 * int(n_patterns) * q
    work = AUTOGRAD_BYTES_PER_PIXEL * int(batch) * q
    obj = 8 * 8 * int(object_shape[0]) * int(object_shape[1])
    return data + work + obj


def _plan_batch(n_patterns: int, n_positions: int, detector_shape, object_shape, device: str,
                batch_size: int | None) -> int:
    """Positions per batch that fit in memory, or a ValueError saying how much is needed."""
    scans = max(1, n_patterns // max(1, n_positions))
    budget = MEMORY_HEADROOM * backend.available_memory(device)
    if batch_size is not None:
        batch = max(1, min(int(batch_size), n_positions))
    else:
        batch = n_positions
        while batch > _MIN_BATCH and gd_memory_estimate(n_patterns, detector_shape, object_shape,
                                                        batch=batch * scans) > budget:
            batch = max(_MIN_BATCH, batch // 2)
    require_memory(gd_memory_estimate(n_patterns, detector_shape, object_shape, batch=batch * scans),
                   device=device, what=f"gradient descent on {n_patterns} patterns of "
                   f"{detector_shape[0]}×{detector_shape[1]} pixels",
                   instead="crop the scan or use a tiled method (--method tie, flowtie or icom)")
    return batch


def _check_dense(geometry: ReconstructionGeometry, device: str = "cpu", n_scans: int = 1) -> None:
    """Refuse grids the dense form cannot hold (:func:`check_dense_grid`) or more memory than available
    (:func:`dense_memory_estimate`)."""
    check_dense_grid(geometry)
    require_memory(dense_memory_estimate(geometry, n_scans), device=device, what="the dense form",
                   instead="use the diagonal form (form='diagonal', --method gd)")


def check_dense_grid(geometry: ReconstructionGeometry) -> None:
    """Refuse grids the dense form cannot hold: object grid ≠ detector window, or above 64×64 pixels."""
    shape, _ = geometry.object_grid(periodic=True)
    qx, qy = geometry.detector_shape
    if tuple(shape) != (qx, qy):
        raise ValueError(f"the dense form needs an object grid equal to the detector window; got object {shape}, "
                         f"detector {(qx, qy)}: use the diagonal form (form='diagonal')")
    if qx * qy > 4096:
        raise ValueError(f"the dense A has {qx * qy}² entries; use the diagonal form for grids above 64×64 pixels")


def dense_memory_estimate(geometry: ReconstructionGeometry, n_scans: int = 1) -> int:
    """Bytes the dense form needs: A, its gradient and the FFT/exit-wave/far-field buffers of every scan
    fitted, counted as (6 + 4·scans) complex64 N²×N² arrays (N² = Qx·Qy detector pixels)."""
    qx, qy = geometry.detector_shape
    return (6 + 4 * int(n_scans)) * 8 * (qx * qy) ** 2


# ----------------------------------------------------------------------------------------------------
# probes and data
# ----------------------------------------------------------------------------------------------------
def _scans_used(geometry: ReconstructionGeometry, use_all_defocus: bool) -> list[int]:
    """Indices (in the store's order) of the scans fitted: the focus alone, or all three."""
    if use_all_defocus:
        return [0, 1, 2]
    return [geometry.focus_index]


def probe_spectra(geometry: ReconstructionGeometry, scans: list[int]) -> np.ndarray:
    """Centred probe spectra of the given scans, normalised like ``geometry.probe_spectrum()``.

    Parameters
    ----------
    geometry : ReconstructionGeometry
    scans : list of int
        Indices into ``geometry.c10``.

    Returns
    -------
    ndarray, shape (len(scans), Qx, Qy), complex128
        Σ|P̃|² = 1 each, zero frequency at (Qx//2, Qy//2), evaluated at the true q.
    """
    out = []
    ab = {k: float(v) for k, v in geometry.aberrations.items()}
    qx, qy = geometry.detector_shape
    for s in scans:
        p = probe_fourier(geometry.detector_shape, geometry.pixel, energy=geometry.energy,
                          semiangle=geometry.semiangle, aberrations=Aberrations(C10=float(geometry.c10[s]), **ab),
                          edge=geometry.aperture_edge, offset=geometry.frequency_offset)
        out.append(np.fft.fftshift(p / math.sqrt(qx * qy)))
    return np.stack(out)


def _sqrt_fft_order(intensity: np.ndarray) -> np.ndarray:
    """√max(I, 0) as float32 in FFT order (zero frequency at index 0), shape (..., Qx, Qy)."""
    out = np.sqrt(np.clip(np.asarray(intensity, dtype=np.float32), 0, None))
    return np.ascontiguousarray(np.fft.ifftshift(out, axes=(-2, -1)))


def sqrt_fft_order_inplace(intensity: np.ndarray) -> np.ndarray:
    """:func:`_sqrt_fft_order` written over ``intensity`` itself, one scan at a time (the peak is the data plus
    one scan, not twice the data).

    Parameters
    ----------
    intensity : ndarray, shape (S, ..., Qx, Qy), float32, C-contiguous
        Overwritten.

    Returns
    -------
    ndarray
        ``intensity``, now √max(I, 0) in FFT order (zero frequency at index 0).
    """
    if intensity.dtype != np.float32 or not intensity.flags.c_contiguous:
        raise ValueError("intensity must be a C-contiguous float32 array to be overwritten in place")
    for part in intensity:
        np.clip(part, 0, None, out=part)
        np.sqrt(part, out=part)
        part[...] = np.fft.ifftshift(part, axes=(-2, -1))
    return intensity


def _check_initial(initial, shape):
    """The starting object as a complex64 array of the object grid's shape, or None."""
    if initial is None:
        return None
    initial = np.asarray(initial)
    if initial.shape != tuple(shape):
        raise ValueError(f"the initial object has shape {initial.shape}, the object grid is {tuple(shape)}: "
                         "start from a result of the same scan and periodicity")
    if not np.all(np.isfinite(initial)):
        raise ValueError("the initial object has non-finite values")
    return initial.astype(np.complex64)


# ----------------------------------------------------------------------------------------------------
# the loss and the optimiser
# ----------------------------------------------------------------------------------------------------
def _amplitude_eps2(sqrt_i: np.ndarray) -> float:
    """ε² of :data:`AMPLITUDE_EPS` for measured amplitudes ``sqrt_i`` (any shape)."""
    return float((AMPLITUDE_EPS * np.sqrt(np.mean(np.square(sqrt_i, dtype=np.float64)))) ** 2)


def _amplitude(far, eps2: float):
    """sqrt(|far|² + ε²): the far-field amplitude with a gradient that vanishes where ``far`` does."""
    return (far.real ** 2 + far.imag ** 2 + eps2).sqrt()


class GDDivergedError(ValueError):
    """The gradient-descent loss became non-finite (one line: the data, or a too-large step)."""


def _step(lr: float | None, optimizer: str) -> float:
    """The step to use: ``lr``, or the optimiser's default (:data:`DEFAULT_LR_GD`, :data:`DEFAULT_LR_ADAM`)."""
    if lr is not None:
        return float(lr)
    return DEFAULT_LR_GD if optimizer == "gd" else DEFAULT_LR_ADAM


def _optimise(model, *, iterations: int, lr: float, optimizer: str, curvature: float,
              callback: Callable | None) -> list[float]:
    """Run the optimiser; returns the loss before each step and after the last (iterations + 1 values)."""
    torch = model.torch
    if optimizer == "adam":
        opt = torch.optim.Adam(model.params, lr=lr)
    elif optimizer != "gd":
        raise ValueError(f"unknown optimizer {optimizer!r}: use 'gd' or 'adam'")
    step = lr / curvature  # plain GD: lr·S/(2 max illumination) on the per-pattern mean loss
    losses = []
    for it in range(int(iterations)):
        for p in model.params:
            p.grad = None
        value = model.loss(grad=True)
        if not math.isfinite(value):
            if it == 0:
                raise GDDivergedError(f"the gradient-descent loss is {value} at the start: the data or the starting "
                                      "object are not finite; check the store with 'flowtie-dask info --check'")
            raise GDDivergedError(f"the gradient-descent loss became {value} at iteration {it}: the step is too large; "
                                  "lower lr")
        losses.append(value)
        if optimizer == "adam":
            opt.step()
        else:
            with torch.no_grad():
                for p in model.params:
                    p -= step * p.grad
        if callback is not None:
            callback(it, value)
    losses.append(model.loss(grad=False))
    return losses

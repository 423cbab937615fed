"""Gradient-descent baseline of the paper: min_A ‖√I − |F₂D A P|‖²_F with torch autograd.

Thin-specimen (diagonal A) form. A = diag(O) with O the complex object on the object grid of
:meth:`~flowtie_dask.geometry.ReconstructionGeometry.object_grid`; the paper's dense N²×N² form is
:func:`dense_gd_reconstruct` (periodic scans up to 64×64 pixels: the Table 1 settings, where the
scan visits every pixel and P is applied by FFTs; ``gd_reconstruct_store(form="dense")``). It fits
the data far better than the diagonal form (N⁴ unknowns) but through off-diagonal entries, so its
object is poor — no better than TIE, as in the paper's GD column. For every
scan position r̂ the diagonal model is

    E(q; r̂) = F_u[ O(⌊r̂⌋ + u) · P_f(u) ](q) / √(Qx·Qy),
    loss = Σ_{r̂, q} (√(I(q; r̂) + ε²) − √(|E(q; r̂)|² + ε²))² / S,      ε = 10⁻³ · rms(√I)

with u the window offsets in FFT order (u = 0 at index 0, signed in [−Q//2, Q − Q//2), wrapped modulo
the object grid when it is periodic), P_f the in-focus probe window shifted by the position's
sub-pixel fraction f exactly as :func:`flowtie_dask.projection.shifted_windows` does, and S the number
of patterns (so the loss is the mean misfit per unit-sum pattern, a fraction of the incident beam).
|E| in this window frame equals the lab-frame far-field amplitude of DESIGN §2, since the two differ by
the phase ramp e^{−2πi q·r̂} only. The ε (:data:`AMPLITUDE_EPS`) keeps the gradient defined where E = 0 —
without it the dark-field steps from the flat start followed FFT round-off and CPU and GPU runs
diverged — and leaves the exact object a zero-loss minimum; the majorisation below still holds, as
√(|E|²+ε²) is the norm of the vector (E, ε). The probe stays fixed at the metadata's probe (the paper initialises
it as the aberration-free PSF; ours carries the stored aberrations).

Parametrisation and optimiser: O is optimised **directly as a complex array** (the diagonal of the
paper's A) with **plain gradient descent** whose step is the majorise–minimise step of the amplitude loss,

    O ← O − lr · S / (2 · max_r Σ_r̂ |P(r − r̂)|²) · g,   lr = 1,

g being torch's complex gradient ∂L/∂Re O + i ∂L/∂Im O of the per-pattern mean loss L. With lr = 1 this
is the parallel error-reduction step: L is majorised at the current O by the quadratic
(1/S)·Σ_r̂ ‖P_r̂·O − ψ'_r̂‖² (ψ' the model exit wave with its far-field modulus replaced by √I), whose
curvature is at most 2·max illumination/S, so every step with 0 < lr < 2 lowers the loss — monotone
descent guaranteed without tuning and independent of scan size, detector size or dose. The guarantee
needs the loss to be majorised by a quadratic in the parameters, which holds for complex O but not for
O = exp(a + iφ); Adam needs an lr tuned to the object's phase range and does not descend monotonically.
Measured before the ε was added (32×32 scan, 32×32 detector, 0.2 Å, 300 kV, 20 mrad, focus only, noise-free single-slice
data, 100 iterations; final loss per pattern / phase MSE in rad²):

===========================  ============================  =============================
setting                      weak object (0.3 rad), start  strong object (3 rad), start
                             1.43e-3, zero-phase MSE 2.5e-3 1.36e-1, zero-phase MSE 0.25
===========================  ============================  =============================
complex, GD, lr = 1          4.8e-14 / 3.1e-13             3.1e-12 / 3.2e-11
complex, GD, lr = 1.9        2.1e-14 / 1.2e-16             1.3e-11 / 6.7e-16
exp(a + iφ), GD, lr = 1      4.8e-14 / 3.0e-13             3.4e-12 / 3.5e-11
complex, Adam, lr = 0.01     1.5e-8 / 3.2e-8 (not monot.)  1.2e-3 / 3.7e-3
complex, Adam, lr = 0.03     1.6e-8 / 2.3e-8 (not monot.)  2.9e-6 / 7.0e-6
complex, Adam, lr = 0.1      1.9e-7 / 1.5e-7 (not monot.)  1.3e-6 / 2.3e-6
exp(a + iφ), Adam, lr = 0.03 1.7e-8 / 2.0e-8 (not monot.)  4.4e-6 / 7.5e-6
===========================  ============================  =============================

Both alternatives remain available (``optimizer="adam"``, ``parametrization="phase"``).

Memory: the whole scan is held on the device (√I as float32) and every iteration is one full-gradient
step; positions are batched inside an iteration only to bound the autograd buffers. The estimate
:func:`gd_memory_estimate` is checked against :func:`available_memory` before anything is allocated.

No dask or zarr here except through :func:`flowtie_dask.store.open_scan_store` in
:func:`gd_reconstruct_store`.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable

import numpy as np

from ...geometry import ReconstructionGeometry
from ...physics.optics import Aberrations, probe_fourier
from ...projection import shifted_windows, unwrap
from ...quality import check_phase

__all__ = [
    "GDDivergedError",
    "available_memory",
    "gd_memory_estimate",
    "gd_reconstruct",
    "gd_reconstruct_store",
    "dense_gd_reconstruct",
]

#: Default step: the majorise–minimise step (plain GD) — see the module docstring.
DEFAULT_LR_GD = 1.0
#: Default Adam step (amplitude units / rad per iteration), if ``optimizer="adam"``.
DEFAULT_LR_ADAM = 0.03
#: Bytes of autograd working memory per pattern pixel during one batch's forward + backward
#: (window gather, product, FFT, |E|, residual and their gradients; measured ≈ 60 B on CPU, rounded up).
AUTOGRAD_BYTES_PER_PIXEL = 96
#: Fraction of the available memory a run may plan to use.
MEMORY_HEADROOM = 0.7
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


def available_memory(device: str = "cpu") -> int:
    """Bytes a run may allocate now.

    Parameters
    ----------
    device : {"cpu", "cuda"}
        ``"cpu"``: ``MemAvailable`` of /proc/meminfo (or free physical pages from ``os.sysconf``);
        ``"cuda"``: free memory of the current GPU (``torch.cuda.mem_get_info``).

    Returns
    -------
    int
        Bytes.
    """
    if device in ("cuda", "gpu"):
        import torch

        _torch_device(device)
        return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - exotic platforms
        return 2**62


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
    avail = available_memory(device)
    budget = MEMORY_HEADROOM * avail
    if batch_size is not None:
        batch = max(1, min(int(batch_size), n_positions))
    else:
        batch = n_positions
        while batch > _MIN_BATCH and gd_memory_estimate(n_patterns, detector_shape, object_shape,
                                                        batch=batch * scans) > budget:
            batch = max(_MIN_BATCH, batch // 2)
    need = gd_memory_estimate(n_patterns, detector_shape, object_shape, batch=batch * scans)
    if need > budget:
        where = "GPU" if device in ("cuda", "gpu") else "host"
        raise ValueError(
            f"gradient descent on {n_patterns} patterns of {detector_shape[0]}×{detector_shape[1]} pixels needs "
            f"{need / 2**30:.1f} GiB, more than the {avail / 2**30:.1f} GiB available ({where}, "
            f"{MEMORY_HEADROOM:.0%} usable); crop the scan or use --method tie"
        )
    return batch


# ----------------------------------------------------------------------------------------------------
# probes and data
# ----------------------------------------------------------------------------------------------------
def _scans_used(geometry: ReconstructionGeometry, use_all_defocus: bool) -> list[int]:
    """Indices (in the store's order) of the scans fitted: the focus alone, or all three."""
    if use_all_defocus:
        return [0, 1, 2]
    return [int(np.argsort(np.asarray(geometry.c10, dtype=float))[1])]


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


def _window_offsets(n: int) -> np.ndarray:
    """Signed window offset u of each FFT-order index (u = i below n − n//2, i − n above)."""
    return np.fft.ifftshift(np.arange(n) - n // 2)


def _layout(geometry: ReconstructionGeometry, spectra: np.ndarray, periodic: bool):
    """Whole-pixel window corners, probe windows per distinct sub-pixel fraction and their index.

    Returns
    -------
    whole : ndarray, shape (P, 2), int64
    windows : ndarray, shape (D, U, Qx, Qy), complex128, FFT order
    inverse : ndarray, shape (P,), int64
    shape, origin : object grid
    """
    rx, ry = geometry.scan_shape
    shape, origin = geometry.object_grid(periodic=periodic)
    ix, iy = np.meshgrid(np.arange(rx), np.arange(ry), indexing="ij")
    pos = geometry.positions_px(ix.ravel(), iy.ravel(), periodic=periodic)
    whole = np.floor(pos)
    frac = pos - whole
    uniq, inverse = np.unique(np.round(frac, 9), axis=0, return_inverse=True)
    qx, qy = geometry.detector_shape
    windows = np.stack([shifted_windows(np.broadcast_to(s, (len(uniq), qx, qy)), uniq) for s in spectra])
    whole = whole.astype(np.int64)
    if not periodic:
        ux, uy = _window_offsets(qx), _window_offsets(qy)
        lo = whole + np.array([ux.min(), uy.min()])
        hi = whole + np.array([ux.max(), uy.max()])
        if lo.min() < 0 or hi[:, 0].max() >= shape[0] or hi[:, 1].max() >= shape[1]:
            raise ValueError("a probe window falls outside the object grid; use periodic=True")
    return whole, windows, inverse.reshape(-1).astype(np.int64), shape, origin


def _illumination(whole: np.ndarray, windows: np.ndarray, inverse: np.ndarray, shape, periodic: bool) -> np.ndarray:
    """Σ_r̂ |P(r − r̂)|² of the in-focus probe on the object grid (float64)."""
    qx, qy = windows.shape[-2:]
    ux, uy = _window_offsets(qx), _window_offsets(qy)
    nx, ny = shape
    ill = np.zeros(shape, dtype=np.float64)
    den = np.abs(windows) ** 2
    for start in range(0, len(whole), 4096):
        w = whole[start:start + 4096]
        ix = w[:, 0:1] + ux[None]
        iy = w[:, 1:2] + uy[None]
        if periodic:
            ix, iy = ix % nx, iy % ny
        flat = (ix[:, :, None] * ny + iy[:, None, :]).reshape(-1)
        ill += np.bincount(flat, weights=den[inverse[start:start + 4096]].reshape(-1), minlength=nx * ny).reshape(shape)
    return ill


def _sqrt_fft_order(intensity: np.ndarray) -> np.ndarray:
    """√max(I, 0) as float32 in FFT order (zero frequency at index 0), shape (..., Qx, Qy)."""
    out = np.sqrt(np.clip(np.asarray(intensity, dtype=np.float32), 0, None))
    return np.ascontiguousarray(np.fft.ifftshift(out, axes=(-2, -1)))


# ----------------------------------------------------------------------------------------------------
# the optimisation
# ----------------------------------------------------------------------------------------------------
def _amplitude_eps2(sqrt_i: np.ndarray) -> float:
    """ε² of :data:`AMPLITUDE_EPS` for measured amplitudes ``sqrt_i`` (any shape)."""
    return float((AMPLITUDE_EPS * np.sqrt(np.mean(np.square(sqrt_i, dtype=np.float64)))) ** 2)


def _amplitude(far, eps2: float):
    """sqrt(|far|² + ε²): the far-field amplitude with a gradient that vanishes where ``far`` does."""
    return (far.real ** 2 + far.imag ** 2 + eps2).sqrt()


class GDDivergedError(ValueError):
    """The gradient-descent loss became non-finite (one line: the data, or a too-large step)."""


class _DiagonalModel:
    """Tensors of one diagonal-A problem and its full-gradient loss evaluation."""

    def __init__(self, sqrt_i, whole, windows, inverse, shape, periodic, device, batch, parametrization,
                 initial=None):
        import torch

        self.torch = torch
        self.device = device
        self.eps2 = _amplitude_eps2(sqrt_i)
        # (D, P, Qx, Qy) float32: sqrt(I + ε²)
        self.sqrt_i = torch.from_numpy(np.sqrt(np.square(sqrt_i) + np.float32(self.eps2))).to(device)
        self.windows = torch.from_numpy(windows.astype(np.complex64)).to(device)  # (D, U, Qx, Qy)
        self.inverse = torch.from_numpy(inverse).to(device)
        self.whole = torch.from_numpy(whole).to(device)
        qx, qy = windows.shape[-2:]
        self.ux = torch.from_numpy(_window_offsets(qx)).to(device)
        self.uy = torch.from_numpy(_window_offsets(qy)).to(device)
        self.shape = tuple(shape)
        self.periodic = periodic
        self.batch = batch
        self.n_patterns = self.sqrt_i.shape[0] * self.sqrt_i.shape[1]
        self.parametrization = parametrization
        start = np.ones(self.shape, np.complex64) if initial is None else np.asarray(initial, np.complex64)
        if parametrization == "complex":
            self.params = [torch.from_numpy(start.copy()).to(device).requires_grad_(True)]
        elif parametrization == "phase":  # O = exp(a + iφ)
            self.params = [torch.from_numpy(v.astype(np.float32)).to(device).requires_grad_(True)
                           for v in (np.log(np.maximum(np.abs(start), 1e-12)), np.angle(start))]
        else:
            raise ValueError(f"unknown parametrization {parametrization!r}: use 'complex' or 'phase'")

    def obj(self):
        if self.parametrization == "complex":
            return self.params[0]
        a, phi = self.params
        return self.torch.polar(self.torch.exp(a), phi)

    def loss(self, *, grad: bool) -> float:
        """Mean misfit per pattern; accumulates the full gradient into the parameters when ``grad``."""
        torch = self.torch
        nx, ny = self.shape
        total = 0.0
        n_pos = self.sqrt_i.shape[1]
        with torch.set_grad_enabled(grad):
            for start in range(0, n_pos, self.batch):
                sl = slice(start, start + self.batch)
                obj = self.obj()
                ix = self.whole[sl, 0:1] + self.ux[None]
                iy = self.whole[sl, 1:2] + self.uy[None]
                if self.periodic:
                    ix, iy = ix % nx, iy % ny
                win = obj[ix[:, :, None], iy[:, None, :]]  # (B, Qx, Qy)
                probe = self.windows[:, self.inverse[sl]]  # (D, B, Qx, Qy)
                far = torch.fft.fft2(win[None] * probe, norm="ortho")
                part = ((_amplitude(far, self.eps2) - self.sqrt_i[:, sl]) ** 2).sum() / self.n_patterns
                if grad:
                    part.backward()
                total += float(part.detach())
        return total


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


def gd_reconstruct(
    intensity: Any,
    geometry: ReconstructionGeometry,
    *,
    iterations: int = 100,
    lr: float | None = None,
    periodic: bool | None = None,
    device: str = "cpu",
    use_all_defocus: bool = False,
    callback: Callable[[int, float], Any] | None = None,
    optimizer: str = "gd",
    parametrization: str = "complex",
    batch_size: int | None = None,
    initial: np.ndarray | None = None,
    return_details: bool = False,
):
    """Reconstruct the object by gradient descent on the far-field amplitudes (paper baseline).

    Parameters
    ----------
    intensity : ndarray, shape (3, Rx, Ry, Qx, Qy)
        The defocus series as stored (centred unit-sum patterns, the store's orientation; oriented here
        with ``geometry.orient``), in the order of ``geometry.c10``. Host (NumPy) array.
    geometry : ReconstructionGeometry
    iterations : int
        Full-gradient steps (the paper: 100).
    lr : float, optional
        Step. ``optimizer="gd"``: a multiple of the majorise–minimise step S/(2·max illumination)
        (default 1.0; any value in (0, 2) descends monotonically). ``optimizer="adam"``: Adam's lr in
        amplitude units (rad for ``parametrization="phase"``) per iteration (default 0.03).
    periodic : bool, optional
        Periodic object of one scan period (windows wrap around); default ``geometry.periodic``.
    device : {"cpu", "cuda"}
        Torch device; ``"cuda"`` without a GPU raises ``RuntimeError("no GPU found …")``.
    use_all_defocus : bool
        Fit all three scans (each with its own C10 probe) instead of the focus alone (the paper).
    callback : callable, optional
        ``callback(iteration, loss)`` after every step.
    optimizer : {"gd", "adam"}
    parametrization : {"complex", "phase"}
        Optimise O directly, or O = exp(a + iφ) with real a, φ.
    batch_size : int, optional
        Scan positions per forward/backward pass (default: as many as fit; the gradient is always the
        full one).
    initial : ndarray, shape (Nx, Ny), complex, optional
        Starting object on ``geometry.object_grid(periodic=periodic)`` (default O = 1), e.g. exp(iφ) of a
        TIE or FlowTIE result: from FlowTIE's phase, 10 iterations reach the MSE of 100 from O = 1 at the
        Table 1 settings (``benchmarks/gd_seeded.py``).
    return_details : bool
        Also return a dict with the illumination, object-grid origin, batch size and timings.

    Returns
    -------
    obj : ndarray, shape (Nx, Ny), complex64
        The object O on ``geometry.object_grid(periodic=periodic)`` (pixel ``geometry.pixel`` Å).
    losses : list of float
        Mean misfit per pattern Σ_q (√I − |E|)² (fraction of the beam), before each step and after the
        last: ``iterations + 1`` values, ``losses[0]`` at the start (O = 1 or ``initial``).
    details : dict
        Only with ``return_details``.

    Raises
    ------
    ValueError
        When the scan does not fit in memory (message says how much it needs and what is available).

    Notes
    -----
    The step and its justification are in the module docstring. On CPU, small problems run much
    faster with ``torch.set_num_threads(1)`` when other processes compete for the cores.
    """
    periodic = geometry.periodic if periodic is None else bool(periodic)
    intensity = np.asarray(intensity)
    if intensity.ndim != 5 or intensity.shape[0] != 3:
        raise ValueError(f"intensity must have shape (3, Rx, Ry, Qx, Qy), got {intensity.shape}")
    scans = _scans_used(geometry, use_all_defocus)
    shape, _ = geometry.object_grid(periodic=periodic)
    initial = _check_initial(initial, shape)  # before any work
    n_pos = intensity.shape[1] * intensity.shape[2]
    dev = _torch_device(device)
    batch = _plan_batch(n_pos * len(scans), n_pos, geometry.detector_shape, shape, device, batch_size)
    data = geometry.orient(intensity[scans])
    if tuple(data.shape[-2:]) != tuple(geometry.detector_shape) or tuple(data.shape[1:3]) != tuple(geometry.scan_shape):
        raise ValueError(f"intensity {intensity.shape} does not match the geometry (scan {geometry.scan_shape}, "
                         f"detector {geometry.detector_shape} after orientation)")
    sqrt_i = _sqrt_fft_order(data.reshape((len(scans), n_pos) + tuple(geometry.detector_shape)))
    del data
    return _run(sqrt_i, geometry, scans, periodic=periodic, dev=dev, batch=batch, iterations=iterations, lr=lr,
                optimizer=optimizer, parametrization=parametrization, callback=callback,
                return_details=return_details, initial=initial)


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


def _run(sqrt_i, geometry, scans, *, periodic, dev, batch, iterations, lr, optimizer, parametrization, callback,
         return_details, initial=None):
    start = time.perf_counter()
    spectra = probe_spectra(geometry, scans)
    whole, windows, inverse, shape, origin = _layout(geometry, spectra, periodic)
    focus = scans.index(_scans_used(geometry, False)[0]) if len(scans) > 1 else 0
    ill = _illumination(whole, windows[focus], inverse, shape, periodic)
    total_ill = ill if len(scans) == 1 else sum(
        _illumination(whole, windows[d], inverse, shape, periodic) for d in range(len(scans)))
    model = _DiagonalModel(sqrt_i, whole, windows, inverse, shape, periodic, dev, batch, parametrization,
                           initial=initial)
    lr = _step(lr, optimizer)
    # curvature of the per-pattern mean loss in O: ≤ 2·max illumination / S
    curvature = 2.0 * float(total_ill.max()) / model.n_patterns
    losses = _optimise(model, iterations=iterations, lr=float(lr), optimizer=optimizer, curvature=curvature,
                       callback=callback)
    obj = model.obj().detach().to("cpu").numpy().astype(np.complex64)
    if not return_details:
        return obj, losses
    details = dict(illumination=ill, origin=origin, batch=batch, lr=float(lr), optimizer=optimizer,
                   parametrization=parametrization, seconds=time.perf_counter() - start, scans=scans)
    return obj, losses, details


def gd_reconstruct_store(
    store: Any,
    *,
    iterations: int = 100,
    lr: float | None = None,
    periodic: bool | None = None,
    device: str = "cpu",
    progress: bool = True,
    use_all_defocus: bool = False,
    optimizer: str = "gd",
    parametrization: str = "complex",
    batch_size: int | None = None,
    initial=None,
    form: str = "diagonal",
    readout: str = "projection",
):
    """Gradient-descent baseline on a scan store, as a :class:`~flowtie_dask.pipeline.ReconstructionResult`.

    Parameters
    ----------
    store : str or ScanStore
        Path of a scan store or an opened one. Only the scans fitted are read (the focus by default).
    iterations, lr, periodic, device, use_all_defocus, optimizer, parametrization, batch_size
        As :func:`gd_reconstruct`.
    initial : ReconstructionResult or ndarray, optional
        Start from this object: a result of the same scan (its exp(i·phase); e.g. ``--method flowtie``'s) or a
        complex (Nx, Ny) array on the object grid.
    progress : bool
        A tqdm bar over the iterations (shows the loss).
    form : {"diagonal", "dense"}
        ``"diagonal"``: A = diag(O), the thin-specimen object (:func:`gd_reconstruct`, any scan size).
        ``"dense"``: the paper's literal baseline, a dense A ∈ C^{N²×N²} started at the identity
        (:func:`dense_gd_reconstruct`; periodic scans whose object grid equals the detector window, at
        most 64×64, e.g. the Table 1 settings; ``initial``, ``optimizer="gd"|"adam"`` only, no batching).
        When the scan visits every object pixel once (step = pixel), P is applied by FFTs.
    readout : {"projection", "diagonal"}
        Dense form only: the object from the model's exit waves ψ = A·P projected like the TIE/FlowTIE
        ones (the paper's step A ≈ F⁻¹EPᴴ, then its diagonal over the illumination), or diag(A) itself.

    Returns
    -------
    ReconstructionResult
        ``phase`` = arg O unwrapped (rad), ``amplitude`` = |O|, ``illumination`` = Σ_r̂ |P(r − r̂)|² of the
        in-focus unit-norm probe, ``pixel_size`` = ``geometry.pixel`` (Å), ``origin`` from the object grid,
        ``attrs``: method "gd", iterations, lr, optimizer, parametrization, final_loss, losses, seconds, …

    Raises
    ------
    ValueError
        When the scan does not fit in memory (checked before the data are read).
    """
    from ... import __version__
    from ...pipeline import ReconstructionResult, bright_field_disk, read_checked
    from ...store import ScanStore, open_scan_store

    start = time.perf_counter()
    if form not in ("diagonal", "dense"):
        raise ValueError(f"unknown form {form!r}: use 'diagonal' (A = diag(O)) or 'dense' (the paper's N²×N² A)")
    if readout not in ("projection", "diagonal"):
        raise ValueError(f"unknown readout {readout!r}: use 'projection' (of the exit waves A·P) or 'diagonal'")
    st = store if isinstance(store, ScanStore) else open_scan_store(store)
    geometry = ReconstructionGeometry.from_metadata(st.metadata, scan_shape=st.scan_shape,
                                                    detector_shape=st.detector_shape)
    periodic = geometry.periodic if periodic is None else bool(periodic)
    scans = _scans_used(geometry, use_all_defocus)
    if form == "dense":
        if not periodic:
            raise ValueError("the dense form needs a periodic scan (its F₂D is square only on one period): "
                             "use form='diagonal'")
        if initial is not None or parametrization != "complex" or batch_size is not None:
            raise ValueError("the dense form starts from A = I with complex entries and no batching: "
                             "leave initial, parametrization and batch_size unset")
        _check_dense(geometry, device, len(scans))
    shape, origin = geometry.object_grid(periodic=periodic)
    if initial is not None and hasattr(initial, "phase"):
        if not (np.allclose(initial.pixel_size, geometry.pixel) and np.allclose(initial.origin, origin)):
            raise ValueError(f"the initial result's grid ({initial.pixel_size} Å pixels from {initial.origin}) is not "
                             f"this scan's object grid ({geometry.pixel} Å from {origin}): start from a result of "
                             "the same scan")
        initial = np.exp(1j * np.asarray(initial.phase))
    initial = _check_initial(initial, shape)
    n_pos = st.scan_shape[0] * st.scan_shape[1]
    dev = _torch_device(device)
    batch = None if form == "dense" else _plan_batch(n_pos * len(scans), n_pos, geometry.detector_shape, shape,
                                                     device, batch_size)
    parts = []
    repairs = None
    for s in scans:
        block, report = read_checked(st.path, range(st.scan_shape[0]), range(st.scan_shape[1]), defocus=[s],
                                     bright_field=bright_field_disk(st.metadata))
        repairs = report if repairs is None else repairs.merge(report)
        block = geometry.orient(block[0])
        parts.append(_sqrt_fft_order(block.reshape((n_pos,) + tuple(geometry.detector_shape))))
        del block
    sqrt_i = np.stack(parts) if len(parts) > 1 else parts[0][None]
    del parts

    bar = None
    callback = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(iterations), desc="gradient descent", unit="it")

        def callback(it, loss):
            bar.set_postfix(loss=f"{loss:.3e}", refresh=False)
            bar.update(1)

    try:
        if form == "dense":
            t0 = time.perf_counter()
            a, losses, ill, projected = _dense_run(sqrt_i, geometry, scans, dev=dev, iterations=iterations, lr=lr,
                                                   optimizer=optimizer, callback=callback)
            diagonal = np.diag(a).reshape(shape)
            a_off = float(np.sqrt(max(np.sum(np.abs(a) ** 2) - np.sum(np.abs(diagonal) ** 2), 0.0) / a.shape[0]))
            del a
            obj = projected if readout == "projection" else diagonal
            det = dict(illumination=ill, origin=origin, batch=None, seconds=time.perf_counter() - t0,
                       offdiagonal_rms=a_off,
                       lr=_step(lr, optimizer))
        else:
            obj, losses, det = _run(sqrt_i, geometry, scans, periodic=periodic, dev=dev, batch=batch,
                                    iterations=iterations, lr=lr, optimizer=optimizer,
                                    parametrization=parametrization, callback=callback, return_details=True,
                                    initial=initial)
    finally:
        if bar is not None:
            bar.close()
    ill = det["illumination"]
    lit = ill > 0.05 * ill.max()
    check_phase(np.angle(obj), valid=lit, what=f"the gradient-descent phase of {st.path}")
    phase = unwrap(np.angle(obj), periodic=periodic, mask=None if periodic else ~lit)
    attrs = {
        "method": "gd",
        "form": form,
        "iterations": int(iterations),
        "lr": det["lr"],
        "optimizer": optimizer,
        "parametrization": parametrization,
        "use_all_defocus": bool(use_all_defocus),
        "batch_size": det["batch"],
        "device": device,
        "final_loss": losses[-1],
        "initial_loss": losses[0],
        "initial": "given" if initial is not None else ("A = I" if form == "dense" else "O = 1"),
        "losses": [float(v) for v in losses],
        "seconds": time.perf_counter() - start,
        "seconds_optimisation": det["seconds"],
        "source": st.path,
        "flowtie_dask_version": __version__,
        "scan_metadata": {k: v for k, v in st.metadata.to_attrs().items() if k != "provenance"},
        "data_repairs": repairs.as_attrs(),
        "data_repairs_summary": repairs.summary(),
    }
    if form == "dense":  # rms of A's off-diagonal entries per row: how much of the fit is outside the object
        attrs["offdiagonal_rms"] = det["offdiagonal_rms"]
        attrs["readout"] = readout
    return ReconstructionResult(phase=phase, amplitude=np.abs(obj).astype(np.float64), illumination=ill,
                                pixel_size=geometry.pixel, origin=det["origin"], periodic=periodic, attrs=attrs)


# ----------------------------------------------------------------------------------------------------
# the paper's dense A
# ----------------------------------------------------------------------------------------------------
def dense_gd_reconstruct(
    intensity: Any,
    geometry: ReconstructionGeometry,
    *,
    iterations: int = 100,
    lr: float | None = None,
    device: str = "cpu",
    use_all_defocus: bool = False,
    callback: Callable[[int, float], Any] | None = None,
    optimizer: str = "gd",
):
    """The paper's gradient descent over a dense potential matrix A (periodic scans up to 64×64 pixels).

    E = F₂D A P with A ∈ C^{N²×N²} (initialised to the identity), P ∈ C^{N²×S} the probe at every
    scan position on the object grid (column s = P(r − r̂_s), unit norm) and F₂D the orthonormal 2D DFT;
    loss = Σ (√I − |E|)² / S as :func:`gd_reconstruct`. The object grid must equal the detector window
    (Nx, Ny) = (Qx, Qy) and be periodic, so that F₂D is square.

    Parameters
    ----------
    intensity : ndarray, shape (3, Rx, Ry, Qx, Qy)
        As :func:`gd_reconstruct`.
    geometry : ReconstructionGeometry
    iterations : int
    lr : float, optional
        ``optimizer="gd"``: a multiple of the majorise–minimise step S/(2‖P‖₂²) (default 1.0; monotone
        for 0 < lr < 2); ``optimizer="adam"``: Adam's lr (default 0.03).
    device : {"cpu", "cuda"}
    use_all_defocus : bool
    callback : callable, optional
        ``callback(iteration, loss)``.
    optimizer : {"gd", "adam"}

    Returns
    -------
    A : ndarray, shape (Nx·Ny, Nx·Ny), complex64
        Rows and columns index object pixels in C order (r = ix·Ny + iy); diag(A) reshaped to (Nx, Ny)
        is the thin-specimen object.
    losses : list of float
        ``iterations + 1`` values as :func:`gd_reconstruct`.

    Notes
    -----
    The dense problem has N⁴ unknowns against N²·S amplitudes, so gradient descent fits the data mostly
    through off-diagonal entries: on an 8×8 weak-phase case (0.4 Å pixels, 8×8 scan) the loss falls
    from 1.8e-3 to 2.2e-6 in 100 steps while diag(A) keeps only a fraction of the object's phase range
    (phase MSE 3.2e-3 rad² against a zero-phase 4.3e-3; correlation with the truth 0.95), where the
    diagonal form recovers the object to 2e-16 rad². This is one reason the paper's GD baseline is weak.
    """
    intensity = np.asarray(intensity)
    if intensity.ndim != 5 or intensity.shape[0] != 3:
        raise ValueError(f"intensity must have shape (3, Rx, Ry, Qx, Qy), got {intensity.shape}")
    scans = _scans_used(geometry, use_all_defocus)
    _check_dense(geometry, device, len(scans))
    rx, ry = geometry.scan_shape
    data = geometry.orient(intensity[scans]).reshape((len(scans), rx * ry) + tuple(geometry.detector_shape))
    a, losses, _, _ = _dense_run(_sqrt_fft_order(data), geometry, scans, dev=_torch_device(device),
                                 iterations=iterations, lr=lr, optimizer=optimizer, callback=callback)
    return a, losses


def _check_dense(geometry: ReconstructionGeometry, device: str = "cpu", n_scans: int = 1) -> None:
    """Refuse grids the dense form cannot hold (object grid ≠ detector window, above 64×64, or more
    memory than available: A, its gradient and the FFT/exit-wave/far-field buffers of every scan fitted,
    counted as (6 + 4·scans) complex64 N²×N² arrays)."""
    shape, _ = geometry.object_grid(periodic=True)
    qx, qy = geometry.detector_shape
    if tuple(shape) != (qx, qy):
        raise ValueError(f"the dense form needs an object grid equal to the detector window; got object {shape}, "
                         f"detector {(qx, qy)}: use the diagonal form (form='diagonal')")
    if qx * qy > 4096:
        raise ValueError(f"the dense A has {qx * qy}² entries; use the diagonal form for grids above 64×64 pixels")
    need = (6 + 4 * n_scans) * 8 * (qx * qy) ** 2
    have = available_memory(device)
    if need > MEMORY_HEADROOM * have:
        raise ValueError(f"the dense form needs {need / 2**30:.1f} GiB, more than the {have / 2**30:.1f} GiB "
                         "available: use the diagonal form (form='diagonal')")


def _translation_kernels(probes: np.ndarray, pos: np.ndarray, shape: tuple[int, int], scan_shape) -> np.ndarray | None:
    """Kernels K (D, Nx, Ny) with A·P = ifft2(fft2(rows of A) · K) when P is circulant, else None.

    P is circulant when the scan visits every object pixel once on the periodic grid, at whole-pixel
    positions that are the scan indices plus one offset (step = pixel, the Table 1 settings): then
    column s is column 0 rolled by s, and (A·P)[r, s] = Σ_x A[r, x] c₀(x − s) is a correlation whose
    transform is fft2(A[r]) · (N² · ifft2(c₀)). Checked on columns before use.
    """
    nx, ny = shape
    if tuple(scan_shape) != (nx, ny):
        return None
    d = pos - pos[0]
    ix, iy = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    if np.abs(d - np.stack([ix.ravel(), iy.ravel()], 1)).max() > 1e-6:
        return None
    c0 = probes[:, :, 0].reshape(-1, nx, ny)
    for col in {1, ny, nx * ny - 1, (nx * ny) // 2 + 3} & set(range(1, nx * ny)):
        shifted = np.roll(c0, (col // ny, col % ny), axis=(1, 2)).reshape(len(c0), -1)
        if np.abs(shifted - probes[:, :, col]).max() > 1e-5 * np.abs(c0).max():
            return None
    return (nx * ny * np.fft.ifft2(c0)).astype(np.complex64)


def _dense_run(sqrt_i, geometry, scans, *, dev, iterations, lr, optimizer, callback, use_fft=None):
    """Dense-A gradient descent on √I of shape (D, S, Qx, Qy) (FFT order, oriented).

    ``use_fft`` (default: when P is circulant, see :func:`_translation_kernels`) applies P by FFTs,
    O(N⁴ log N) instead of the O(N⁶) product, with the same result.

    Returns A (N², N²) complex64 on the host, the losses, Σ_s |P_s(r)|² of the in-focus probe as
    (Nx, Ny), and the object read out by projecting the model's in-focus exit waves ψ = A·P as the
    TIE/FlowTIE projection does: Σ_s ψ[r, s]·P̄[r, s] / Σ_s |P[r, s]|² as (Nx, Ny).
    """
    import torch

    qx, qy = geometry.detector_shape
    n = qx * qy
    rx, ry = geometry.scan_shape
    sqrt_i = sqrt_i.reshape(len(scans), rx * ry, n).transpose(0, 2, 1)  # (D, N², S)
    ix, iy = np.meshgrid(np.arange(rx), np.arange(ry), indexing="ij")
    pos = geometry.positions_px(ix.ravel(), iy.ravel(), periodic=True)
    spectra = probe_spectra(geometry, scans)
    # on a periodic grid of the window's size, a Fourier shift by the full position places the probe
    probes = np.stack([shifted_windows(np.broadcast_to(s, (len(pos), qx, qy)), pos).reshape(len(pos), n).T
                       for s in spectra]).astype(np.complex64)  # (D, N², S)
    focus = scans.index(_scans_used(geometry, False)[0]) if len(scans) > 1 else 0
    illumination = (np.abs(probes[focus]) ** 2).sum(axis=1).reshape(qx, qy)
    kernels = _translation_kernels(probes, pos, (qx, qy), (rx, ry)) if use_fft in (None, True) else None
    if use_fft and kernels is None:
        raise ValueError("use_fft=True needs a scan that visits every object pixel once (step = pixel, periodic)")
    if kernels is not None:  # circulant P: its singular values are |K|
        big = sum(float((np.abs(k) ** 2).max()) for k in kernels)
        kt = torch.from_numpy(kernels).to(dev)

        def apply_p(a):  # (N², N²) → (D, N², S)
            fa = torch.fft.fft2(a.reshape(n, qx, qy))
            return torch.fft.ifft2(fa[None] * kt[:, None]).reshape(len(scans), n, n)
    else:
        big = sum(np.linalg.norm(p, 2) ** 2 for p in probes)
        pmat = torch.from_numpy(probes).to(dev)

        def apply_p(a):
            return torch.matmul(a, pmat)
    eps2 = _amplitude_eps2(sqrt_i)
    target = torch.from_numpy(np.ascontiguousarray(np.sqrt(np.square(sqrt_i) + np.float32(eps2)))).to(dev)
    a = torch.eye(n, dtype=torch.complex64, device=dev).requires_grad_(True)
    n_patterns = target.shape[0] * target.shape[2]

    class _Dense:
        params = [a]

        def loss(self, *, grad):
            with torch.set_grad_enabled(grad):
                psi = apply_p(a)  # (D, N², S)
                far = torch.fft.fft2(psi.reshape(len(scans), qx, qy, -1), dim=(1, 2), norm="ortho")
                value = ((_amplitude(far.reshape(len(scans), n, -1), eps2) - target) ** 2).sum() / n_patterns
                if grad:
                    value.backward()
            return float(value.detach())

    model = _Dense()
    model.torch = torch
    lr = _step(lr, optimizer)
    losses = _optimise(model, iterations=iterations, lr=float(lr), optimizer=optimizer,
                       curvature=2.0 * float(big) / n_patterns, callback=callback)
    with torch.no_grad():
        psi = apply_p(a)[focus].to("cpu").numpy()
    projected = ((psi * probes[focus].conj()).sum(axis=1) / illumination.reshape(-1)).reshape(qx, qy)
    return a.detach().to("cpu").numpy(), losses, illumination, projected

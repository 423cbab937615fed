"""The diagonal (thin-specimen) form A = diag(O): probe windows, illumination, the batched model and
:func:`gd_reconstruct` on an in-memory defocus series.

The model, the loss and the majorise–minimise step are described in :mod:`flowtie_dask.baselines.gd`.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from ...geometry import ReconstructionGeometry
from ...projection import shifted_windows
from .common import (
    _amplitude,
    _amplitude_eps2,
    _check_initial,
    _optimise,
    _plan_batch,
    _scans_used,
    _sqrt_fft_order,
    _step,
    _torch_device,
    probe_spectra,
)


# ----------------------------------------------------------------------------------------------------
# probe windows and illumination
# ----------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------
# the model and the run
# ----------------------------------------------------------------------------------------------------
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
    The step and its justification are in :mod:`flowtie_dask.baselines.gd`. On CPU, small problems run much
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

"""The paper's dense N²×N² potential matrix A: :func:`dense_gd_reconstruct` and its run, with P applied
by FFTs when it is circulant (a periodic scan visiting every object pixel once, the Table 1 settings).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ...geometry import ReconstructionGeometry
from ...projection import shifted_windows
from .common import (
    _amplitude,
    _amplitude_eps2,
    _check_dense,
    _optimise,
    _scans_used,
    _sqrt_fft_order,
    _step,
    _torch_device,
    probe_spectra,
)


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

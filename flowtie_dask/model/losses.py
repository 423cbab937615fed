"""FlowTIE training losses in torch (autograd-friendly), DESIGN §3 and the paper's eq. 3.

Shapes, per batch of B samples with the scan axes last:

* ``u``      (B, 2, P, Rx, Ry)  predicted forward differences of the probe-frame phase, rad per scan step
  (u[:, 0] ≈ φ(r̂+ŝx) − φ(r̂), u[:, 1] ≈ φ(r̂+ŝy) − φ(r̂), 2π jumps kept);
* ``phase``  (B, P, Rx, Ry)     true (wrapped) probe-frame phase φ(q, r̂), rad;
* ``didz``   (B, P, Rx, Ry)     ∂I/∂C10 of unit-sum patterns, 1/Å;
* ``i0``     (B, P, Rx, Ry)     in-focus intensity;
* ``q``      (P, 2) or (B, P, 2) true scattering vector of each detector pixel, 1/Å;
* ``step``   (sx, sy) scan step in Å (or a (B, 2) tensor); ``wavelength`` λ in Å (or a (B,) tensor).

Terms (the paper's L_vf, L_cont, L_phase, weights α = β = γ = 1):

* :func:`vector_field_loss`  — intensity-weighted MSE of u against the wrapped-phase forward differences
  (:func:`forward_difference_target`);
* :func:`continuity_loss`    — the probe-frame continuity equation with the smooth field wrap(u)/step;
* :func:`phase_loss`         — complex-wave misfit of the integrated phase (:func:`integrate_forward`),
  blind to 2π wraps and to a per-q offset.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

__all__ = [
    "wrap",
    "forward_difference_target",
    "vector_field_loss",
    "continuity_residual",
    "continuity_loss",
    "integrate_forward",
    "phase_loss",
    "flowtie_loss",
    "intensity_weight",
]

TWO_PI = 2.0 * math.pi
_BOUNDARIES = ("periodic", "mirror")


def _check_boundary(boundary: str):
    if boundary not in _BOUNDARIES:
        raise ValueError(f"boundary must be 'periodic' or 'mirror', got {boundary!r}")


def _per_sample(x: Any, like: torch.Tensor) -> Any:
    """A float, or a (B,) tensor viewed as (B, 1, 1, 1) to broadcast against (B, P, Rx, Ry)."""
    if isinstance(x, torch.Tensor) and x.ndim > 0:
        return x.to(dtype=like.dtype, device=like.device).view(-1, 1, 1, 1)
    return float(x)


def _steps(step: Any, like: torch.Tensor):
    """(sx, sy) as floats, or from a (B, 2) tensor as two (B, 1, 1, 1) tensors."""
    if isinstance(step, torch.Tensor) and step.ndim == 2:
        s = step.to(dtype=like.dtype, device=like.device)
        return s[:, 0].view(-1, 1, 1, 1), s[:, 1].view(-1, 1, 1, 1)
    sx, sy = (float(v) for v in step)
    return sx, sy


def _q_maps(q: torch.Tensor, like: torch.Tensor):
    """q (P, 2) or (B, P, 2) → q_x, q_y each (1 or B, P, 1, 1)."""
    q = torch.as_tensor(q, dtype=like.dtype, device=like.device)
    if q.ndim == 2:
        q = q[None]
    if q.shape[-2] != like.shape[1] or q.shape[-1] != 2:
        raise ValueError(f"q must be (P, 2) or (B, P, 2) with P = {like.shape[1]}, got {tuple(q.shape)}")
    return q[..., 0, None, None], q[..., 1, None, None]


def wrap(x: torch.Tensor) -> torch.Tensor:
    """Map angles into (−π, π]: x − 2π·⌈(x − π)/2π⌉ (gradient 1 almost everywhere)."""
    return x - TWO_PI * torch.ceil((x - math.pi) / TWO_PI)


def forward_difference_target(phase: torch.Tensor):
    """Forward differences of the wrapped phase over one scan step, 2π jumps kept (DESIGN §3).

    Equals ``tie.forward_differences(phase, step)·step``: the last row/column wraps around to the first.

    Parameters
    ----------
    phase : Tensor, shape (B, P, Rx, Ry)
        Wrapped probe-frame phase, rad.

    Returns
    -------
    target : Tensor, shape (B, 2, P, Rx, Ry)
        target[:, 0] = φ(r̂+ŝx) − φ(r̂), target[:, 1] = φ(r̂+ŝy) − φ(r̂), rad per step.
    valid : Tensor, shape (1, 2, 1, Rx, Ry), bool
        False on the wrap-around differences (last row of the x component, last column of the y
        component), which are meaningless on a non-periodic crop.
    """
    if phase.ndim != 4:
        raise ValueError(f"phase must be (B, P, Rx, Ry), got shape {tuple(phase.shape)}")
    dx = torch.roll(phase, -1, dims=-2) - phase
    dy = torch.roll(phase, -1, dims=-1) - phase
    valid = torch.ones((1, 2, 1) + tuple(phase.shape[-2:]), dtype=torch.bool, device=phase.device)
    valid[:, 0, :, -1, :] = False
    valid[:, 1, :, :, -1] = False
    return torch.stack([dx, dy], dim=1), valid


def intensity_weight(i0: torch.Tensor) -> torch.Tensor:
    """Default weight of :func:`vector_field_loss`: i0 / mean(i0) per sample, shape (B, P, Rx, Ry)."""
    return i0 / i0.mean(dim=(1, 2, 3), keepdim=True).clamp_min(torch.finfo(i0.dtype).tiny)


def vector_field_loss(u: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted MSE between the predicted and the true difference fields (the paper's L_vf).

    loss = Σ w·(u − target)² / Σ w, with w broadcast over both components (so it is a per-component mean).

    Parameters
    ----------
    u, target : Tensor, shape (B, 2, P, Rx, Ry)
        rad per scan step.
    weight : Tensor, shape (B, P, Rx, Ry) or broadcastable to (B, 2, P, Rx, Ry), ≥ 0, optional
        Intensity weight (e.g. :func:`intensity_weight`) or mask (times the ``valid`` mask of
        :func:`forward_difference_target` on non-periodic crops). Uniform when None.

    Returns
    -------
    Tensor, scalar, rad².
    """
    err = (u - target) ** 2
    if weight is None:
        return err.mean()
    if weight.ndim == 4:
        weight = weight[:, None]
    weight = weight.to(dtype=u.dtype).expand_as(err)
    return (weight * err).sum() / weight.sum().clamp_min(torch.finfo(u.dtype).tiny)


def continuity_residual(u: torch.Tensor, didz: torch.Tensor, i0: torch.Tensor, q: torch.Tensor,
                        wavelength: Any, step: Any, *, scheme: str = "difference") -> torch.Tensor:
    """Residual of the probe-frame continuity equation on a periodic scan grid.

        R = ∂I/∂C10 + (λ/2π) ∇·(I₀ ũ) − λ q·∇I₀,   ũ = wrap(u)/step (rad/Å, the smooth field)

    Discretisation (staggered, conservative): ũ_x(r̂) lives on the edge r̂ → r̂+ŝx, where I₀ is the mean of
    its two ends; the flux F_x = ½(I₀(r̂) + I₀(r̂+ŝx))·ũ_x(r̂) is differenced backwards,
    (F_x(r̂) − F_x(r̂−ŝx))/s_x (likewise in y), so ∇·(I₀∇·) acting on forward differences is the
    standard second-order 5-point form (the 5-point Laplacian for constant I₀). ∇I₀ is the central
    difference (I₀(r̂+ŝ) − I₀(r̂−ŝ))/(2s), which is exactly the same staggered divergence applied to the
    uniform tilt field −2πq (λq·∇I₀ = −(λ/2π)∇·(I₀·(−2πq))): the lab-frame equation discretised alike.
    All differences are periodic (``torch.roll``); on non-periodic crops the outer ring is invalid.
    Second order: R → ∂I/∂C10 + (λ/2π)∇·(I∇φ) − λq·∇I as O(step²).

    ``scheme="spectral"`` (periodic scans only) keeps the staggering but replaces every stencil by its
    exact Fourier form along its axis: the midpoint gradient from the differences,
    FFT(∂φ(r̂+ŝ/2)) = FFT(wrap(u)/s)·πKs/sin(πKs); I₀ on the edge by a half-step Fourier shift e^{iπKs};
    the divergence 2πiK·e^{−iπKs}; ∇I₀ by 2πiK. Exact for band-limited fields. On scans sampled near
    their Nyquist frequency (4D-STEM intensities reach 2α/λ) it matters: on the 32×32-scan weak-object
    series of the tests, ‖R‖/‖∂I/∂C10‖ at the true phase is 0.34 with "difference" and 0.14 with
    "spectral" (0.13 with the exact smooth gradient, the floor set by the ±20 Å finite-difference
    derivative).

    Parameters
    ----------
    u : Tensor, shape (B, 2, P, Rx, Ry)
        rad per scan step.
    didz, i0 : Tensor, shape (B, P, Rx, Ry)
        1/Å and intensity.
    q : Tensor, shape (P, 2) or (B, P, 2)
        1/Å.
    wavelength : float or Tensor (B,)
        Å.
    step : (sx, sy) or Tensor (B, 2)
        Å.
    scheme : {"difference", "spectral"}
        Second-order staggered differences (any boundary) or their spectral form (periodic only).

    Returns
    -------
    Tensor, shape (B, P, Rx, Ry)
        Intensity per Å (the units of ∂I/∂C10).
    """
    if scheme == "spectral":
        return _continuity_residual_spectral(u, didz, i0, q, wavelength, step)
    if scheme != "difference":
        raise ValueError(f"scheme must be 'difference' or 'spectral', got {scheme!r}")
    sx, sy = _steps(step, i0)
    lam = _per_sample(wavelength, i0)
    ux = wrap(u[:, 0]) / sx
    uy = wrap(u[:, 1]) / sy
    i_px = torch.roll(i0, -1, dims=-2)
    i_mx = torch.roll(i0, 1, dims=-2)
    i_py = torch.roll(i0, -1, dims=-1)
    i_my = torch.roll(i0, 1, dims=-1)
    fx = 0.5 * (i0 + i_px) * ux
    fy = 0.5 * (i0 + i_py) * uy
    div = (fx - torch.roll(fx, 1, dims=-2)) / sx + (fy - torch.roll(fy, 1, dims=-1)) / sy
    qx, qy = _q_maps(q, i0)
    tilt = qx * (i_px - i_mx) / (2 * sx) + qy * (i_py - i_my) / (2 * sy)
    return didz + lam / TWO_PI * div - lam * tilt


def _spectral_ops(n: int, dim: int, like: torch.Tensor):
    """Fourier symbols along scan axis ``dim`` (−2 or −1), per scan step (k = K·s in cycles per step):
    half-step shift e^{iπk}, staggered derivative 2πik·e^{−iπk}, central derivative 2πik and the
    midpoint-gradient correction πk/sin(πk) = 1/sinc(k); derivatives are still to be divided by s."""
    k = torch.fft.fftfreq(n, dtype=torch.float64, device=like.device)
    k = k.view(-1, 1) if dim == -2 else k
    cplx = torch.complex64 if like.dtype == torch.float32 else torch.complex128
    shift = torch.polar(torch.ones_like(k), math.pi * k)
    ikd = torch.complex(torch.zeros_like(k), TWO_PI * k)
    return (shift.to(cplx), (ikd * shift.conj()).to(cplx), ikd.to(cplx),
            (1.0 / torch.sinc(k)).to(cplx))


def _filter(x: torch.Tensor, symbol: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.fft.ifft(torch.fft.fft(x, dim=dim) * symbol, dim=dim).real


def _continuity_residual_spectral(u, didz, i0, q, wavelength, step):
    """:func:`continuity_residual` with ``scheme="spectral"`` (periodic scans)."""
    steps = _steps(step, i0)
    lam = _per_sample(wavelength, i0)
    qx, qy = _q_maps(q, i0)
    div = 0.0
    tilt = 0.0
    for comp, dim, qc in ((0, -2, qx), (1, -1, qy)):
        shift, stag, central, sinc = _spectral_ops(i0.shape[dim], dim, i0)
        s = steps[comp]
        g_mid = _filter(wrap(u[:, comp]), sinc, dim) / s
        i_edge = _filter(i0, shift, dim)
        div = div + _filter(i_edge * g_mid, stag, dim) / s
        tilt = tilt + qc * _filter(i0, central, dim) / s
    return didz + lam / TWO_PI * div - lam * tilt


def _interior_mask(shape, device, dtype):
    rx, ry = shape[-2:]
    m = torch.zeros((rx, ry), dtype=dtype, device=device)
    m[1:-1, 1:-1] = 1
    return m


def continuity_loss(u: torch.Tensor, didz: torch.Tensor, i0: torch.Tensor, q: torch.Tensor, wavelength: Any,
                    step: Any, *, boundary: str = "periodic", weight: torch.Tensor | None = None,
                    length: float = 20.0, normalise: str = "global", eps: float = 1e-3,
                    scheme: str = "difference") -> torch.Tensor:
    """Continuity loss (the paper's L_cont in the probe frame), dimensionless.

    loss = mean over (B, P, Rx, Ry) of (R·length/N)², R from :func:`continuity_residual`, with

    * ``normalise="global"`` (default): N = ⟨I₀⟩, the per-sample mean of i0 over scan and detector
      (1/P for unit-sum patterns). Every pixel's residual counts in the same absolute units, so the bright
      field dominates.
    * ``normalise="per_q"``: N = Ī(q), the per-sample scan mean of i0 at q clipped below at
      ``eps``·max_q Ī — the relative residual of each detector pixel, all pixels equal.

    R/N is a rate of relative intensity change per Å of defocus; ``length`` (a defocus, 20 Å by default)
    makes it a relative intensity change, so the loss is dimensionless.

    Why "global" is the default: at the true phase the residual is small where the continuity equation
    with the smooth field holds, i.e. in the bright field, but of the order of the signal in the dark
    field (phase vortices, weak and fast-varying intensity, the finite-difference ∂I/∂C10). Per-q
    normalisation lifts the dark field to equal weight, and the loss stops preferring the truth. Measured
    on the tests' weak-object series (32×32 scan, 0.25 Å, 300 kV, 20 mrad, ±20 Å; "difference" scheme),
    loss at the true field vs at u = 0: global 3.4e-4 vs 4.5e-3 (13×), per_q 0.031 vs 0.069 (2.3×); for a
    3-rad phase object global 0.043 vs 0.37 (8.7×) but per_q 2.6 vs 2.0 — the truth scores *worse* than
    zero. With ``scheme="spectral"``: global 5.5e-5 vs 8.9e-3 (160×) and 0.028 vs 0.77 (28×).

    Parameters
    ----------
    u, didz, i0, q, wavelength, step
        As :func:`continuity_residual`.
    boundary : {"periodic", "mirror"}
        "periodic": the scan is periodic. "mirror" (any non-periodic crop/tile): the outer ring of scan
        positions, whose stencils wrap around, is left out.
    weight : Tensor, shape (B, P, Rx, Ry), optional
        Extra non-negative weight (weighted mean instead of the mean).
    length : float
        Å.
    normalise : {"global", "per_q"}
    eps : float
        Clip of Ī(q) for ``normalise="per_q"``.
    scheme : {"difference", "spectral"}
        See :func:`continuity_residual`; "spectral" needs ``boundary="periodic"``.

    Returns
    -------
    Tensor, scalar.
    """
    _check_boundary(boundary)
    if scheme == "spectral" and boundary != "periodic":
        raise ValueError("the spectral continuity scheme needs a periodic scan (boundary='periodic')")
    res = continuity_residual(u, didz, i0, q, wavelength, step, scheme=scheme)
    tiny = torch.finfo(i0.dtype).tiny
    if normalise == "global":
        norm = i0.mean(dim=(1, 2, 3), keepdim=True).clamp_min(tiny)
    elif normalise == "per_q":
        ibar = i0.mean(dim=(-2, -1), keepdim=True)
        norm = torch.maximum(ibar, eps * ibar.amax(dim=1, keepdim=True)).clamp_min(tiny)
    else:
        raise ValueError(f"normalise must be 'global' or 'per_q', got {normalise!r}")
    r2 = (res * (length / norm)) ** 2
    w = None if weight is None else weight.to(r2.dtype)
    if boundary != "periodic":
        m = _interior_mask(r2.shape, r2.device, r2.dtype)
        w = m if w is None else w * m
    if w is None:
        return r2.mean()
    w = w.expand_as(r2)
    return (w * r2).sum() / w.sum().clamp_min(torch.finfo(r2.dtype).tiny)


def _mirror_differences(ux: torch.Tensor, uy: torch.Tensor):
    """Differences of the even (mirror) extension of φ, as ``tie._mirror_gradient(kind="forward")``.

    φ_ext[2R−1−i] = φ[i] along x: the x differences become u[0..R−2], 0, −u[R−2..0], 0 (the wrap-around
    difference u[R−1] is dropped), and the field is extended evenly along the other axis.
    """

    def odd(g, dim):
        n = g.shape[dim]
        head = g.narrow(dim, 0, n - 1)
        zero = torch.zeros_like(g.narrow(dim, 0, 1))
        return torch.cat([head, zero, -torch.flip(head, dims=(dim,)), zero], dim=dim)

    def even(g, dim):
        return torch.cat([g, torch.flip(g, dims=(dim,))], dim=dim)

    return even(odd(ux, -2), -1), odd(even(uy, -2), -1)


def integrate_forward(u: torch.Tensor, step: Any = None, boundary: str = "periodic") -> torch.Tensor:
    """Least-squares phase from forward differences over the scan (DESIGN §3), zero mean per q.

    φ̃(K) = Σ_j conj(w_j)·ũ_j(K) / Σ_j |w_j|²,  w_j = e^{2πi K_j·s_j} − 1 = e^{2πi k_j/n_j} − 1,
    φ̃(0) = 0 — the inverse of :func:`forward_difference_target` (exact for a periodic scan). Per scan
    step the symbol does not involve the step, so u in rad per step needs none. Same result as
    ``tie.integrate_gradient(u/step, step=step, kind="forward", boundary=boundary)``.

    Parameters
    ----------
    u : Tensor, shape (B, 2, P, Rx, Ry)
        rad per scan step (or a gradient in rad/Å when ``step`` is given).
    step : (sx, sy), optional
        When given, ``u`` is a gradient field in rad/Å (as ``tie.integrate_gradient`` takes) and is
        multiplied by the step first.
    boundary : {"periodic", "mirror"}
        "mirror" integrates the even extension of φ (2Rx × 2Ry), for non-periodic tiles; only the
        interior differences (not the wrap-around ones) are used, and the crop's mean is removed.

    Returns
    -------
    Tensor, shape (B, P, Rx, Ry)
        rad, real dtype of ``u``.
    """
    _check_boundary(boundary)
    ux, uy = u[:, 0], u[:, 1]
    if step is not None:
        sx, sy = _steps(step, ux)
        ux, uy = ux * sx, uy * sy
    rx, ry = ux.shape[-2:]
    if boundary == "mirror":
        ux, uy = _mirror_differences(ux, uy)
    mx, my = ux.shape[-2:]
    real = u.dtype if u.dtype in (torch.float32, torch.float64) else torch.float32
    cplx = torch.complex64 if real == torch.float32 else torch.complex128
    kx = torch.fft.fftfreq(mx, dtype=torch.float64, device=u.device).view(mx, 1)
    ky = torch.fft.rfftfreq(my, dtype=torch.float64, device=u.device).view(1, -1)
    wx = torch.polar(torch.ones_like(kx), TWO_PI * kx) - 1
    wy = torch.polar(torch.ones_like(ky), TWO_PI * ky) - 1
    den = wx.abs() ** 2 + wy.abs() ** 2
    dc = den == 0
    inv = torch.where(dc, torch.zeros_like(den), 1.0 / torch.where(dc, torch.ones_like(den), den))
    cx = (wx.conj() * inv).to(cplx)
    cy = (wy.conj() * inv).to(cplx)
    phi_hat = cx * torch.fft.rfft2(ux.to(real)) + cy * torch.fft.rfft2(uy.to(real))
    phi = torch.fft.irfft2(phi_hat, s=(mx, my))
    if boundary == "mirror":
        phi = phi[..., :rx, :ry]
        phi = phi - phi.mean(dim=(-2, -1), keepdim=True)
    return phi


def phase_loss(u: torch.Tensor, phase: torch.Tensor, i0: torch.Tensor, boundary: str = "periodic") -> torch.Tensor:
    """Complex-wave phase loss (the paper's L_phase, DESIGN §3), blind to 2π and to per-q offsets.

    With φ̂ = :func:`integrate_forward`\\ (u) and Δ = φ̂ − φ,

        loss = Σ_{b,q} [ Σ_r̂ I₀ − |Σ_r̂ I₀·e^{iΔ}| ] / Σ_{b,q,r̂} I₀,

    which is the closed-form minimum over a per-(sample, q) phase offset c of the intensity-weighted
    complex misfit ½‖√I₀ (e^{i(φ̂+c)} − e^{iφ})‖² (= Σ I₀(1 − cos(Δ + c)), minimised by
    c = −arg Σ I₀e^{iΔ}), divided by the total intensity. The integrator fixes only a zero mean per q, so
    the offset is free; the misfit is what reaches the exit waves (DESIGN §4). Range [0, 1]; ≈ the
    intensity-weighted ½·Var(Δ) for small errors.

    Parameters
    ----------
    u : Tensor, shape (B, 2, P, Rx, Ry)
        rad per scan step.
    phase : Tensor, shape (B, P, Rx, Ry)
        True probe-frame phase, rad (any 2π branch).
    i0 : Tensor, shape (B, P, Rx, Ry)
        In-focus intensity (the weight).
    boundary : {"periodic", "mirror"}
        Of the integrator.

    Returns
    -------
    Tensor, scalar, dimensionless.
    """
    phi_hat = integrate_forward(u, boundary=boundary)
    d = phi_hat - phase
    w = i0.to(phi_hat.dtype)
    c = torch.complex((w * torch.cos(d)).sum(dim=(-2, -1)), (w * torch.sin(d)).sum(dim=(-2, -1)))
    total = w.sum(dim=(-2, -1))
    # torch.abs of a complex tensor has gradient sgn(c) = 0 at c = 0 (no NaN for all-dark pixels)
    return (total - torch.abs(c)).sum() / total.sum().clamp_min(torch.finfo(w.dtype).tiny)


def flowtie_loss(u: torch.Tensor, batch: Mapping[str, Any], *, alpha: float = 1.0, beta: float = 1.0,
                 gamma: float = 1.0, wavelength: Any = None, step: Any = None, boundary: str = "periodic",
                 continuity_scheme: str = "difference"):
    """Total FlowTIE loss α·L_vf + β·L_cont + γ·L_phase (the paper's eq. 3, α = β = γ = 1).

    Parameters
    ----------
    u : Tensor, shape (B, 2, P, Rx, Ry)
        Model output, rad per scan step.
    batch : mapping
        ``didz``, ``i0`` (B, P, Rx, Ry); ``q`` (P, 2) or (B, P, 2); ``phase`` (B, P, Rx, Ry), the true
        probe-frame phase; optional ``weight`` (B, P, Rx, Ry) for L_vf (default :func:`intensity_weight`);
        optional ``target`` (B, 2, P, Rx, Ry) (default :func:`forward_difference_target` of ``phase``);
        optional ``wavelength`` and ``step`` when not passed as arguments.
    alpha, beta, gamma : float
    wavelength : float or Tensor (B,)
        Å.
    step : (sx, sy) or Tensor (B, 2)
        Å.
    boundary : {"periodic", "mirror"}
        "periodic" for whole periodic scans; "mirror" for non-periodic crops: the wrap-around
        differences are masked out of L_vf, the outer ring out of L_cont, and the integrator of L_phase
        uses the mirror extension.
    continuity_scheme : {"difference", "spectral"}
        Discretisation of L_cont (:func:`continuity_residual`); "spectral" for periodic scans only.

    Returns
    -------
    total : Tensor, scalar
    terms : dict
        ``{"vf": L_vf, "cont": L_cont, "phase": L_phase}`` (tensors, attached to the graph).
    """
    _check_boundary(boundary)
    wavelength = batch["wavelength"] if wavelength is None else wavelength
    step = batch["step"] if step is None else step
    didz, i0, q, phase = batch["didz"], batch["i0"], batch["q"], batch["phase"]
    computed, valid = forward_difference_target(phase)
    target = batch.get("target")
    target = computed if target is None else target
    weight = batch.get("weight")
    weight = intensity_weight(i0) if weight is None else weight
    weight = weight[:, None] if weight.ndim == 4 else weight
    if boundary != "periodic":
        weight = weight * valid
    terms = {
        "vf": vector_field_loss(u, target, weight),
        "cont": continuity_loss(u, didz, i0, q, wavelength, step, boundary=boundary, scheme=continuity_scheme),
        "phase": phase_loss(u, phase, i0, boundary=boundary),
    }
    total = alpha * terms["vf"] + beta * terms["cont"] + gamma * terms["phase"]
    return total, terms

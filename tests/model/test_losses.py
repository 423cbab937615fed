import math

import numpy as np
import pytest
import torch

from flowtie_dask.model import SharedFlowModel
from flowtie_dask.model.losses import (
    continuity_loss,
    continuity_residual,
    flowtie_loss,
    forward_difference_target,
    integrate_forward,
    intensity_weight,
    phase_loss,
    vector_field_loss,
    wrap,
)
from flowtie_dask.tie import defocus_derivative, forward_differences, integrate_gradient
from tests.conftest import weak_object_series

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def weak():
    """The weak-object series as one batch (1, P, R, R), scan last, and its optics."""
    inten, psi, _, geo = weak_object_series(32, 0.25)
    didz, i0 = defocus_derivative(inten, geo.c10)
    r, p = geo.scan_shape[0], geo.detector_shape[0] * geo.detector_shape[1]

    def flat(a):
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(a.reshape(r, r, p), -1, 0)))[None]

    qx, qy = geo.q_vectors()
    q = torch.from_numpy(np.stack(np.meshgrid(qx, qy, indexing="ij"), -1).reshape(p, 2).astype(np.float32))
    return {"didz": flat(didz), "i0": flat(i0), "phase": flat(np.angle(psi)), "q": q,
            "wavelength": geo.wavelength, "step": geo.scan_step}


def _crop(batch, x0, y0, t, pixels=slice(None)):
    out = {k: v[:, pixels, x0:x0 + t, y0:y0 + t].contiguous() for k, v in batch.items()
           if k in ("didz", "i0", "phase")}
    out["q"] = batch["q"][pixels]
    return out


def _scan_first(x):
    """(P, Rx, Ry) tensor → (Rx, Ry, P) array, the layout of flowtie_dask.tie."""
    return np.moveaxis(x.detach().numpy(), 0, -1)


# ---------------------------------------------------------------------------------------------- basics


def test_wrap_maps_into_the_half_open_interval():
    x = torch.tensor([-3 * math.pi, -math.pi, -1.0, 0.0, 1.0, math.pi, 3 * math.pi, 7.0], dtype=torch.float64)
    w = wrap(x)
    assert torch.all(w > -math.pi) and torch.all(w <= math.pi)
    torch.testing.assert_close(w[[1, 5, 6]], torch.full((3,), math.pi, dtype=torch.float64))
    torch.testing.assert_close(w[[2, 3, 4]], x[[2, 3, 4]])
    torch.testing.assert_close(torch.cos(w), torch.cos(x))
    xg = torch.linspace(-10, 10, 7, requires_grad=True)
    wrap(xg).sum().backward()
    torch.testing.assert_close(xg.grad, torch.ones(7))


def test_target_is_tie_forward_differences_times_step(weak):
    t, valid = forward_difference_target(weak["phase"])
    step = weak["step"]
    gx, gy = forward_differences(_scan_first(weak["phase"][0]), step=step)
    np.testing.assert_allclose(_scan_first(t[0, 0]), gx * step[0], atol=1e-6)
    np.testing.assert_allclose(_scan_first(t[0, 1]), gy * step[1], atol=1e-6)
    assert t.abs().max() > 6  # 2π jumps are kept (dark-field vortices)
    assert valid.shape == (1, 2, 1, 32, 32)
    assert not valid[0, 0, 0, -1].any() and valid[0, 0, 0, :-1].all()
    assert not valid[0, 1, 0, :, -1].any() and valid[0, 1, 0, :, :-1].all()


# ---------------------------------------------------------------------------------------------- integrator


@pytest.mark.parametrize("boundary", ["periodic", "mirror"])
def test_integrator_matches_tie_on_the_true_field(weak, boundary):
    t, _ = forward_difference_target(weak["phase"])  # float32, with 2π jumps
    step = weak["step"]
    ours = integrate_forward(t, boundary=boundary)
    ref = integrate_gradient(_scan_first(t[0, 0]) / step[0], _scan_first(t[0, 1]) / step[1], step=step,
                             kind="forward", boundary=boundary)
    assert ours.dtype == torch.float32
    np.testing.assert_allclose(_scan_first(ours[0]), ref, atol=1e-5)
    # u in rad/Å with the step given
    torch.testing.assert_close(integrate_forward(t / torch.tensor(step).view(1, 2, 1, 1, 1), step=step,
                                                 boundary=boundary), ours, rtol=0, atol=1e-5)


@pytest.mark.parametrize("boundary", ["periodic", "mirror"])
def test_integrator_matches_tie_on_a_random_field(boundary):
    g = torch.Generator().manual_seed(3)
    u = torch.randn(2, 2, 5, 20, 14, generator=g, dtype=torch.float64)  # not a gradient field
    step = (0.3, 0.5)
    ours = integrate_forward(u, boundary=boundary)
    for b in range(2):
        ref = integrate_gradient(_scan_first(u[b, 0]) / step[0], _scan_first(u[b, 1]) / step[1], step=step,
                                 kind="forward", boundary=boundary)
        np.testing.assert_allclose(_scan_first(ours[b]), ref, atol=1e-10)


@pytest.mark.parametrize("boundary", ["periodic", "mirror"])
def test_integrator_inverts_forward_differences(boundary):
    phi = torch.randn(1, 3, 12, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t, _ = forward_difference_target(phi)  # periodic differences; "mirror" must ignore the wrap-around ones
    out = integrate_forward(t, boundary=boundary)
    torch.testing.assert_close(out, phi - phi.mean(dim=(-2, -1), keepdim=True), rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------- losses on the truth


@pytest.mark.parametrize("crop", [None, (5, 9, 16)])
def test_vector_field_and_phase_losses_vanish_on_the_truth(weak, crop):
    batch = weak if crop is None else _crop(weak, *crop)
    boundary = "periodic" if crop is None else "mirror"
    t, valid = forward_difference_target(batch["phase"])
    w = intensity_weight(batch["i0"])
    if crop is not None:
        w = w[:, None] * valid
    assert vector_field_loss(t, t, w) == 0
    assert phase_loss(t, batch["phase"], batch["i0"], boundary=boundary) < 1e-6
    noisy = t + 0.1 * torch.randn(t.shape, generator=torch.Generator().manual_seed(0))
    assert vector_field_loss(noisy, t, w) > 1e-3
    assert phase_loss(noisy, batch["phase"], batch["i0"], boundary=boundary) > 1e-4
    zero = torch.zeros_like(t)
    assert phase_loss(zero, batch["phase"], batch["i0"], boundary=boundary) > 1e-4


def test_phase_loss_is_blind_to_per_q_offsets_and_2pi(weak):
    t, _ = forward_difference_target(weak["phase"])
    g = torch.Generator().manual_seed(5)
    u = t + 0.05 * torch.randn(t.shape, generator=g)
    phase = weak["phase"]
    shifted = phase + 3.0 * torch.randn(1, phase.shape[1], 1, 1, generator=g) \
        + 2 * math.pi * torch.randint(-2, 3, phase.shape, generator=g)
    ref = phase_loss(u, phase, weak["i0"])
    torch.testing.assert_close(phase_loss(u, shifted, weak["i0"]), ref, rtol=1e-4, atol=1e-7)
    assert phase_loss(t, shifted, weak["i0"]) < 1e-6
    # and to a constant added to u's integral: a global offset per q of φ̂ does not matter either
    torch.testing.assert_close(phase_loss(u, phase - 1.7, weak["i0"]), ref, rtol=1e-4, atol=1e-7)


def test_phase_loss_is_the_offset_minimised_complex_misfit():
    g = torch.Generator().manual_seed(2)
    u = 0.3 * torch.randn(1, 2, 2, 8, 8, generator=g, dtype=torch.float64)
    phase = torch.randn(1, 2, 8, 8, generator=g, dtype=torch.float64)
    i0 = torch.rand(1, 2, 8, 8, generator=g, dtype=torch.float64)
    d = integrate_forward(u) - phase
    brute = 0.0
    for k in range(2):  # ½‖√I₀(e^{i(φ̂+c)} − e^{iφ})‖² = Σ I₀(1 − cos(Δ + c)), minimised over c per q

        def misfit(c):
            wave = torch.exp(1j * (d[0, k][None] + c[:, None, None]))
            return 0.5 * (i0[0, k, None] * (wave - 1).abs() ** 2).sum(dim=(1, 2))

        coarse = torch.linspace(-math.pi, math.pi, 2001, dtype=torch.float64)
        best = coarse[misfit(coarse).argmin()]
        brute += misfit(torch.linspace(best - 0.004, best + 0.004, 2001, dtype=torch.float64)).min()
    torch.testing.assert_close(phase_loss(u, phase, i0), brute / i0.sum(), rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------------------------------------- continuity


def _continuity_numpy(u, i0, q, lam, step):
    """Independent loop form of the staggered operator: −(λ/2π)∇·(I₀ wrap(u)/s) + λq·∇_c I₀ (periodic)."""
    p, nx, ny = i0.shape
    sx, sy = step
    out = np.zeros_like(i0)
    w = (u + np.pi) % (2 * np.pi) - np.pi  # wrap (the ±π edge does not occur here)
    for k in range(p):
        for i in range(nx):
            for j in range(ny):
                ip, im, jp, jm = (i + 1) % nx, (i - 1) % nx, (j + 1) % ny, (j - 1) % ny
                fx_here = 0.5 * (i0[k, i, j] + i0[k, ip, j]) * w[0, k, i, j] / sx
                fx_back = 0.5 * (i0[k, im, j] + i0[k, i, j]) * w[0, k, im, j] / sx
                fy_here = 0.5 * (i0[k, i, j] + i0[k, i, jp]) * w[1, k, i, j] / sy
                fy_back = 0.5 * (i0[k, i, jm] + i0[k, i, j]) * w[1, k, i, jm] / sy
                div = (fx_here - fx_back) / sx + (fy_here - fy_back) / sy
                grad = (q[k, 0] * (i0[k, ip, j] - i0[k, im, j]) / (2 * sx)
                        + q[k, 1] * (i0[k, i, jp] - i0[k, i, jm]) / (2 * sy))
                out[k, i, j] = -lam / (2 * np.pi) * div + lam * grad
    return out


def test_continuity_vanishes_on_a_pair_that_satisfies_the_discrete_equation():
    rng = np.random.default_rng(7)
    lam, step = 0.0197, (0.3, 0.45)
    p, nx, ny = 3, 7, 6
    i0 = 0.5 + rng.random((p, nx, ny))
    u = rng.uniform(-3.0, 3.0, (2, p, nx, ny))
    q = rng.normal(size=(p, 2))
    didz = _continuity_numpy(u, i0, q, lam, step)
    # the predicted field may carry 2π jumps: the loss uses its smooth form wrap(u)
    u_jumps = u + 2 * np.pi * rng.integers(-1, 2, u.shape)
    args = [torch.from_numpy(a)[None] for a in (u_jumps, didz, i0)]
    res = continuity_residual(*args, torch.from_numpy(q), lam, step)
    assert res.abs().max() < 1e-13 * np.abs(didz).max()
    assert continuity_loss(*args, torch.from_numpy(q), lam, step) < 1e-24
    assert continuity_loss(*args, torch.from_numpy(q), lam, step, normalise="per_q") < 1e-24
    # constant I₀: the operator is the 5-point Laplacian of any φ whose forward differences are u
    phi = 0.4 * rng.normal(size=(1, p, nx, ny))  # differences inside (−π, π]: wrap leaves them alone
    t, _ = forward_difference_target(torch.from_numpy(phi))
    lap = ((np.roll(phi, -1, 2) - 2 * phi + np.roll(phi, 1, 2)) / step[0] ** 2
           + (np.roll(phi, -1, 3) - 2 * phi + np.roll(phi, 1, 3)) / step[1] ** 2)
    ones = torch.full((1, p, nx, ny), 2.0, dtype=torch.float64)
    res = continuity_residual(t, torch.from_numpy(-lam / (2 * np.pi) * 2.0 * lap), ones, torch.from_numpy(q), lam, step)
    assert res.abs().max() < 1e-12


def _smooth_example(n, length=8.0, lam=0.0197):
    """I₀ = 1 + 0.1 cos(kx)cos(2ky), φ_p = a_p sin(kx) + 0.3 cos(ky) + 0.2 sin(kx + ky), analytic ∂I/∂C10."""
    k = 2 * np.pi / length
    s = length / n
    x = np.arange(n) * s
    X, Y = np.meshgrid(x, x, indexing="ij")
    q = np.array([[0.0, 0.0], [0.5, -0.3], [-1.0, 0.8]])
    a = np.array([0.4, 0.8, 1.2])[:, None, None]
    b, c, e = 0.3, 0.2, 0.1
    phi = a * np.sin(k * X) + b * np.cos(k * Y) + c * np.sin(k * X + k * Y)
    px = a * k * np.cos(k * X) + c * k * np.cos(k * X + k * Y)
    py = -b * k * np.sin(k * Y) + c * k * np.cos(k * X + k * Y)
    lap = -a * k**2 * np.sin(k * X) - b * k**2 * np.cos(k * Y) - 2 * c * k**2 * np.sin(k * X + k * Y)
    i0 = 1 + e * np.cos(k * X) * np.cos(2 * k * Y)
    ix = -e * k * np.sin(k * X) * np.cos(2 * k * Y)
    iy = -2 * e * k * np.cos(k * X) * np.sin(2 * k * Y)
    div = ix * px + iy * py + i0 * lap
    didz = -lam / (2 * np.pi) * div + lam * (q[:, 0, None, None] * ix + q[:, 1, None, None] * iy)
    i0 = np.broadcast_to(i0, phi.shape).copy()
    t, _ = forward_difference_target(torch.from_numpy(phi)[None])
    return t, torch.from_numpy(didz)[None], torch.from_numpy(i0)[None], torch.from_numpy(q), lam, (s, s)


def test_continuity_operator_converges_to_the_continuity_equation():
    """R → ∂I/∂C10 + (λ/2π)∇·(I∇φ) − λq·∇I: second order for the staggered differences, exact spectrally."""
    errs = []
    for n in (16, 32, 64):
        t, didz, i0, q, lam, step = _smooth_example(n)
        res = continuity_residual(t, didz, i0, q, lam, step)
        errs.append(float(res.norm() / didz.norm()))
        spectral = continuity_residual(t, didz, i0, q, lam, step, scheme="spectral")
        assert float(spectral.norm() / didz.norm()) < 1e-12
    order = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(order > 1.9), (errs, order)
    assert errs[-1] < 5e-3


@pytest.mark.parametrize("scheme", ["difference", "spectral"])
def test_continuity_loss_prefers_the_true_field(weak, scheme):
    t, _ = forward_difference_target(weak["phase"])
    args = (weak["didz"], weak["i0"], weak["q"], weak["wavelength"], weak["step"])
    truth = continuity_loss(t, *args, scheme=scheme)
    zero = continuity_loss(torch.zeros_like(t), *args, scheme=scheme)
    noisy = continuity_loss(t + 0.1 * torch.randn(t.shape, generator=torch.Generator().manual_seed(0)), *args,
                            scheme=scheme)
    # not zero on real data: ∂I/∂C10 is a ±20 Å finite difference and the smooth field has vortices
    assert 0 < truth < 0.1 * zero  # measured: 3.4e-4 vs 4.5e-3 (difference), 5.5e-5 vs 8.9e-3 (spectral)
    assert noisy > 10 * truth


def test_continuity_on_a_crop_uses_the_interior_only(weak):
    t, _ = forward_difference_target(weak["phase"])
    args = (weak["q"], weak["wavelength"], weak["step"])
    full = continuity_residual(t, weak["didz"], weak["i0"], *args)
    x0, y0, n = 5, 9, 16
    crop = _crop(weak, x0, y0, n)
    tc, _ = forward_difference_target(crop["phase"])
    loss = continuity_loss(tc, crop["didz"], crop["i0"], *args, boundary="mirror")
    inner = full[..., x0 + 1:x0 + n - 1, y0 + 1:y0 + n - 1] * (20.0 / crop["i0"].mean())
    torch.testing.assert_close(loss, (inner**2).mean(), rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="periodic"):
        continuity_loss(tc, crop["didz"], crop["i0"], *args, boundary="mirror", scheme="spectral")


# ---------------------------------------------------------------------------------------------- total loss, training


@pytest.mark.parametrize("boundary", ["periodic", "mirror"])
def test_flowtie_loss_sums_its_terms(weak, boundary):
    batch = weak if boundary == "periodic" else _crop(weak, 3, 4, 16)
    t, _ = forward_difference_target(batch["phase"])
    u = t + 0.05 * torch.randn(t.shape, generator=torch.Generator().manual_seed(1))
    total, terms = flowtie_loss(u, batch, alpha=1.0, beta=2.0, gamma=3.0, wavelength=weak["wavelength"],
                                step=weak["step"], boundary=boundary)
    assert set(terms) == {"vf", "cont", "phase"}
    torch.testing.assert_close(total, terms["vf"] + 2 * terms["cont"] + 3 * terms["phase"])
    _, on_truth = flowtie_loss(t, batch, wavelength=weak["wavelength"], step=weak["step"], boundary=boundary)
    assert on_truth["vf"] == 0 and on_truth["phase"] < 1e-6
    assert all(on_truth[k] < terms[k] for k in terms)


def test_a_few_adamw_steps_lower_the_loss(weak):
    torch.manual_seed(0)
    batch = _crop(weak, 6, 2, 16, pixels=slice(None, None, 16))  # 64 detector pixels, 16×16 tile
    model = SharedFlowModel(hidden=16, depth=3)
    params = list(model.parameters())
    opts = dict(wavelength=weak["wavelength"], step=weak["step"], boundary="mirror")
    u = model(batch["didz"], batch["i0"], batch["q"])
    _, terms = flowtie_loss(u, batch, **opts)
    for name, term in terms.items():  # gradients reach the weights through every term
        grads = torch.autograd.grad(term, params, retain_graph=True)
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        assert torch.isfinite(norm) and norm > 0, name
    opt = torch.optim.AdamW(params, lr=3e-3)
    history = []
    for _ in range(12):
        total, _ = flowtie_loss(model(batch["didz"], batch["i0"], batch["q"]), batch, **opts)
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
    final, _ = flowtie_loss(model(batch["didz"], batch["i0"], batch["q"]), batch, **opts)
    assert final.item() < 0.7 * history[0], history

"""One gradient integrator for NumPy, CuPy and torch (flowtie_dask.integrate)."""

import numpy as np
import pytest
import torch

from flowtie_dask import tie
from flowtie_dask.backend import cupy_available
from flowtie_dask.integrate import integrate_gradient, mirror_gradient
from flowtie_dask.model import fields, losses

torch.set_num_threads(1)

CASES = [(k, b) for k in ("forward", "spectral") for b in ("periodic", "mirror")]
STEP = (0.2, 0.3)


def _field(shape=(14, 11, 3), seed=0, dtype=np.float64):
    gx, gy = np.random.default_rng(seed).normal(size=(2,) + shape)
    return gx.astype(dtype), gy.astype(dtype)


def _difference_matrix(shape, step, boundary):
    """Dense forward-difference operator (2·Rx·Ry × Rx·Ry) built from tie.forward_differences of unit
    phases; "mirror" keeps only the interior differences (no wrap-around row/column)."""
    n = shape[0] * shape[1]
    cols = []
    for i in range(n):
        e = np.zeros(n)
        e[i] = 1.0
        gx, gy = tie.forward_differences(e.reshape(shape), step=step)
        if boundary == "mirror":
            gx, gy = gx[:-1, :], gy[:, :-1]
        cols.append(np.concatenate([gx.ravel(), gy.ravel()]))
    return np.stack(cols, axis=1)


# ------------------------------------------------------------------------------------- one function, three inputs


def test_the_old_names_are_the_new_operator():
    assert tie.integrate_gradient is integrate_gradient
    assert losses.integrate_forward is fields.integrate_forward


@pytest.mark.parametrize("kind,boundary,highpass", [c + (0.0,) for c in CASES] + [("spectral", b, 0.8) for b in
                                                                                     ("periodic", "mirror")])
def test_numpy_and_torch_agree(kind, boundary, highpass):
    gx, gy = _field()
    ref = integrate_gradient(gx, gy, step=STEP, kind=kind, boundary=boundary, highpass=highpass)
    assert isinstance(ref, np.ndarray) and ref.dtype == np.float64 and ref.shape == gx.shape
    out = integrate_gradient(torch.from_numpy(gx), torch.from_numpy(gy), step=STEP, kind=kind,
                             boundary=boundary, highpass=highpass)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-12)
    # the training layout: scan axes last
    tx, ty = (torch.from_numpy(np.moveaxis(g, -1, 0).copy()) for g in (gx, gy))
    last = integrate_gradient(tx, ty, step=STEP, kind=kind, boundary=boundary, highpass=highpass, axes=(-2, -1))
    np.testing.assert_allclose(np.moveaxis(last.numpy(), 0, -1), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind,boundary", CASES)
def test_numpy_and_torch_agree_in_float32(kind, boundary):
    gx, gy = _field(dtype=np.float32)
    ref = integrate_gradient(gx, gy, step=STEP, kind=kind, boundary=boundary)
    out = integrate_gradient(torch.from_numpy(gx), torch.from_numpy(gy), step=STEP, kind=kind, boundary=boundary)
    assert ref.dtype == np.float32 and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=2e-6 * float(np.abs(ref).max()))


@pytest.mark.skipif(not cupy_available(), reason="needs CuPy and a GPU")
@pytest.mark.parametrize("kind,boundary", CASES)
def test_cupy_agrees_with_numpy(kind, boundary):
    import cupy as cp

    gx, gy = _field()
    ref = integrate_gradient(gx, gy, step=STEP, kind=kind, boundary=boundary, highpass=0.5 * (kind == "spectral"))
    out = integrate_gradient(cp.asarray(gx), cp.asarray(gy), step=STEP, kind=kind, boundary=boundary,
                             highpass=0.5 * (kind == "spectral"))
    assert isinstance(out, cp.ndarray) and out.dtype == cp.float64
    np.testing.assert_allclose(cp.asnumpy(out), ref, rtol=0, atol=1e-12)
    if torch.cuda.is_available():
        t = integrate_gradient(torch.from_numpy(gx).cuda(), torch.from_numpy(gy).cuda(), step=STEP, kind=kind,
                               boundary=boundary, highpass=0.5 * (kind == "spectral"))
        np.testing.assert_allclose(t.cpu().numpy(), ref, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------- against a slow reference


@pytest.mark.parametrize("boundary", ["periodic", "mirror"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_forward_kind_inverts_forward_differences(boundary, backend):
    phi = np.random.default_rng(1).uniform(-np.pi, np.pi, size=(12, 9, 2))
    gx, gy = tie.forward_differences(phi, step=STEP)  # periodic; "mirror" must ignore the wrap-around ones
    if backend == "torch":
        gx, gy = torch.from_numpy(gx), torch.from_numpy(gy)
    out = integrate_gradient(gx, gy, step=STEP, kind="forward", boundary=boundary)
    out = out.numpy() if backend == "torch" else out
    np.testing.assert_allclose(out, phi - phi.mean(axis=(0, 1)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("boundary", ["periodic", "mirror"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_forward_kind_is_the_least_squares_inverse(boundary, backend):
    """On a field that is not a gradient: the same minimiser as a dense least-squares solve of the
    differences per scan step, min_φ Σ_j ‖Δ_jφ − s_j·g_j‖² (Δ_j the forward difference over one step)."""
    gx, gy = _field(shape=(9, 7), seed=4)
    d = _difference_matrix(gx.shape, (1.0, 1.0), boundary)
    cut_x, cut_y = ((slice(0, -1), slice(None)), (slice(None), slice(0, -1))) if boundary == "mirror" else ((), ())
    rhs = np.concatenate([(STEP[0] * gx)[cut_x].ravel(), (STEP[1] * gy)[cut_y].ravel()])
    ref = np.linalg.lstsq(d, rhs, rcond=None)[0].reshape(gx.shape)  # minimum norm = zero mean
    if backend == "torch":
        out = integrate_gradient(torch.from_numpy(gx), torch.from_numpy(gy), step=STEP, boundary=boundary).numpy()
    else:
        out = integrate_gradient(gx, gy, step=STEP, boundary=boundary)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-11)


def test_mirror_gradient_is_the_gradient_of_the_even_extension():
    phi = np.random.default_rng(2).normal(size=(6, 5))
    gx, gy = tie.forward_differences(phi, step=(1.0, 1.0))
    ext = tie.mirror_extend(phi[..., None, None])[..., 0, 0]
    ex, ey = tie.forward_differences(ext, step=(1.0, 1.0))
    mx, my, crop = mirror_gradient(gx, gy, "forward")
    assert crop == (6, 5)
    np.testing.assert_allclose(mx, ex, atol=1e-12)
    np.testing.assert_allclose(my, ey, atol=1e-12)
    tx, ty, _ = mirror_gradient(torch.from_numpy(gx.T.copy()), torch.from_numpy(gy.T.copy()), "forward", axes=(1, 0))
    np.testing.assert_allclose(tx.numpy().T, ex, atol=1e-12)


# ------------------------------------------------------------------------------------- torch specifics


@pytest.mark.parametrize("kind,boundary", CASES)
def test_torch_gradients_flow(kind, boundary):
    g = torch.Generator().manual_seed(0)
    gx = torch.randn(6, 5, 2, generator=g, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(6, 5, 2, generator=g, dtype=torch.float64, requires_grad=True)

    def f(a, b):
        return integrate_gradient(a, b, step=STEP, kind=kind, boundary=boundary, highpass=0.3 * (kind == "spectral"))

    assert torch.autograd.gradcheck(f, (gx, gy))


def test_torch_half_precision_and_errors():
    gx = torch.randn(8, 8, dtype=torch.float16)
    assert integrate_gradient(gx, gx, step=STEP).dtype == torch.float32
    with pytest.raises(ValueError, match="kind"):
        integrate_gradient(gx, gx, step=STEP, kind="backward")
    with pytest.raises(ValueError, match="boundary"):
        integrate_gradient(gx, gx, step=STEP, boundary="zero")
    with pytest.raises(ValueError, match="axes"):
        integrate_gradient(gx, gx, step=STEP, axes=(1, -1))


def test_integrate_forward_is_the_operator_per_step():
    u = torch.randn(2, 2, 3, 10, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    for boundary in ("periodic", "mirror"):
        ours = losses.integrate_forward(u, boundary=boundary)
        ref = integrate_gradient(u[:, 0], u[:, 1], step=(1.0, 1.0), boundary=boundary, axes=(-2, -1))
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)
        # a per-sample step (B, 2) multiplies the gradient first
        steps = torch.tensor([[0.2, 0.3], [0.5, 0.7]], dtype=torch.float64)
        per = losses.integrate_forward(u, step=steps, boundary=boundary)
        for b in range(2):
            one = integrate_gradient(u[b, 0] * steps[b, 0], u[b, 1] * steps[b, 1], step=(1.0, 1.0),
                                     boundary=boundary, axes=(-2, -1))
            torch.testing.assert_close(per[b], one, rtol=0, atol=1e-14)


def test_zero_mean_gradient_keeps_a_learned_offset_from_becoming_a_ramp():
    """A constant offset added to a pixel's gradient field: a mirror integration of the raw field carries a ramp of
    offset × width; of the field less its mean it equals the offset-free field's (whose own mean is removed too,
    the same for both), per detector pixel; periodic fields pass unchanged (their integration ignores the mean)."""
    import torch

    from flowtie_dask.integrate import zero_mean_gradient

    rng = np.random.default_rng(4)
    phi = rng.normal(size=(24, 20, 3))  # three detector pixels, a non-periodic phase
    gx = np.diff(phi, axis=0, append=phi[-1:])  # forward differences, last one zero (mirror)
    gy = np.diff(phi, axis=1, append=phi[:, -1:])
    offset = np.array([0.3, -0.2, 0.05])
    step = (0.5, 0.5)
    clean = integrate_gradient(*zero_mean_gradient(gx / 0.5, gy / 0.5, boundary="mirror"), step=step, boundary="mirror")
    biased = (gx / 0.5 + offset, gy / 0.5 - offset)
    fixed = integrate_gradient(*zero_mean_gradient(*biased, boundary="mirror"), step=step, boundary="mirror")
    raw = integrate_gradient(*biased, step=step, boundary="mirror")
    np.testing.assert_allclose(fixed - fixed.mean(axis=(0, 1)), clean - clean.mean(axis=(0, 1)), atol=1e-10)
    ramp = raw - clean
    assert np.ptp(ramp - ramp.mean(axis=(0, 1)), axis=(0, 1)).min() > 0.5 * np.abs(offset).min() * 20 * 0.5
    zx, zy = zero_mean_gradient(*biased, boundary="mirror")
    np.testing.assert_allclose(zx.mean(axis=(0, 1)), 0, atol=1e-12)
    np.testing.assert_allclose(zy.mean(axis=(0, 1)), 0, atol=1e-12)
    assert zero_mean_gradient(*biased, boundary="periodic")[0] is biased[0]
    tx, ty = zero_mean_gradient(torch.from_numpy(biased[0]), torch.from_numpy(biased[1]), boundary="mirror")
    np.testing.assert_allclose(tx.numpy(), zx, atol=1e-12)
    np.testing.assert_allclose(ty.numpy(), zy, atol=1e-12)

"""Gradient-descent baseline (the paper's comparative method) on small simulated scans."""

import dataclasses

import numpy as np
import pytest
import torch

from flowtie_dask.baselines import gd
from flowtie_dask.baselines.gd import dense_gd_reconstruct, gd_reconstruct
from flowtie_dask.baselines.gd.common import _plan_batch, _sqrt_fft_order
from flowtie_dask.baselines.gd.dense import _dense_run
from flowtie_dask.geometry import ReconstructionGeometry
from flowtie_dask.methods import get_method
from flowtie_dask.physics import Aberrations, probe_fourier
from flowtie_dask.simulate.multislice import simulate_positions
from flowtie_dask.runner import reconstruct
from flowtie_dask.store import ScanMetadata, open_scan_store, write_scan_store
from tests.conftest import weak_phase_object

C10 = (20.0, 0.0, -20.0)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def simulate(n, pixel, scan_every=1, max_phase=0.3):
    """Single-slice defocus series of a weak phase object: object n×n pixels of ``pixel`` Å (periodic),
    full n×n detector, one scan position every ``scan_every`` pixels."""
    samp = (pixel, pixel)
    phase = weak_phase_object(n, pixel, max_phase)
    tr = np.exp(1j * phase)[None, None].astype(np.complex64)
    probes = np.stack([probe_fourier((n, n), samp, energy=300e3, semiangle=20, aberrations=Aberrations(C10=c))
                       for c in C10])
    r = n // scan_every
    step = pixel * scan_every
    ix, iy = np.meshgrid(np.arange(r), np.arange(r), indexing="ij")
    pos = np.stack([ix.ravel(), iy.ravel()], 1) * step
    inten, _ = simulate_positions(pos, probes=probes, transmissions=tr, propagator=np.ones((n, n), np.complex64),
                                  sampling=samp, detector_shape=(n, n))
    geo = ReconstructionGeometry(energy=300e3, semiangle=20.0, aperture_edge=0.0, focus_c10=0.0, aberrations={},
                                 scan_shape=(r, r), scan_step=(step, step), detector_shape=(n, n),
                                 detector_sampling=(1 / (n * pixel),) * 2, detector_center=(n // 2, n // 2),
                                 periodic=True, c10=C10)
    return inten.reshape(3, r, r, n, n), geo, phase


def phase_mse(rec, truth):
    """DESIGN §4: mean of ((φ_rec − mean) − (φ_gt − mean))², rad²."""
    return float((((rec - rec.mean()) - (truth - truth.mean())) ** 2).mean())


def monotone(losses, rtol=1e-5):
    return all(b <= a * (1 + rtol) + 1e-12 for a, b in zip(losses, losses[1:]))


@pytest.fixture(scope="module")
def weak():
    """32×32 object of 0.2 Å, 16×16 scan of 0.4 Å steps, 32×32 detector."""
    return simulate(32, 0.2, scan_every=2)


@pytest.fixture(scope="module")
def weak_gd(weak):
    inten, geo, _ = weak
    seen = []
    obj, losses = gd_reconstruct(inten, geo, callback=lambda it, loss: seen.append((it, loss)))
    return obj, losses, seen


def test_gd_lowers_its_loss_monotonically(weak_gd):
    obj, losses, seen = weak_gd
    assert len(losses) == 101 and [it for it, _ in seen] == list(range(100))
    assert [v for _, v in seen] == losses[:-1]
    assert monotone(losses)
    assert losses[-1] < 0.5 * losses[0]
    assert losses[-1] < 1e-6 * losses[0]  # noise-free thin object: the model is exact (measured 3e-11 × initial)


def test_gd_recovers_the_weak_phase_object(weak, weak_gd):
    _, _, truth = weak
    obj, _, _ = weak_gd
    assert obj.shape == (32, 32) and obj.dtype == np.complex64
    zero = phase_mse(np.zeros_like(truth), truth)  # the object variance, 2.5e-3 rad²
    err = phase_mse(np.angle(obj), truth)  # measured 3e-13 rad²
    assert zero == pytest.approx(2.54e-3, rel=0.01)
    assert err < 1e-4 * zero
    np.testing.assert_allclose(np.abs(obj), 1.0, atol=1e-3)


def test_adam_and_all_defocus_options_also_descend(weak):
    inten, geo, truth = weak
    obj, losses = gd_reconstruct(inten, geo, iterations=30, optimizer="adam", parametrization="phase",
                                 use_all_defocus=True)
    assert losses[-1] < 0.05 * losses[0]
    assert phase_mse(np.angle(obj), truth) < 0.1 * truth.var()
    with pytest.raises(ValueError, match="unknown optimizer"):
        gd_reconstruct(inten, geo, iterations=1, optimizer="lbfgs")


def test_batching_gives_the_same_full_gradient_step(weak):
    inten, geo, _ = weak
    a, la = gd_reconstruct(inten, geo, iterations=3)
    b, lb = gd_reconstruct(inten, geo, iterations=3, batch_size=37)
    np.testing.assert_allclose(la, lb, rtol=1e-4)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_dense_a_lowers_its_loss_and_its_diagonal_follows_the_object():
    """The paper's dense A (N²×N² = 64×64, 8×8 scan, 8×8 detector), identity start.

    The dense problem is far from determined (N⁴ unknowns): GD fits the amplitudes mostly through
    off-diagonal entries, so diag(A) has the object's phase pattern (correlation 0.95) but a much
    smaller range than the diagonal-A fit, which recovers the object exactly."""
    inten, geo, truth = simulate(8, 0.4)
    a, losses = dense_gd_reconstruct(inten, geo)
    assert a.shape == (64, 64)
    assert monotone(losses)
    assert losses[-1] < 0.01 * losses[0]  # measured 2.2e-6 from 1.8e-3
    obj, diag_losses = gd_reconstruct(inten, geo)
    assert phase_mse(np.angle(obj), truth) < 1e-6 * truth.var()
    diag = np.angle(np.diag(a)).reshape(8, 8)
    assert np.corrcoef(diag.ravel(), np.angle(obj).ravel())[0, 1] > 0.9  # measured 0.95
    with pytest.raises(ValueError, match="object grid equal to the detector"):
        dense_gd_reconstruct(inten[:, :4, :4], dataclasses.replace(geo, scan_shape=(4, 4)))


def test_gd_method_on_a_store_returns_a_reconstruction_result(tmp_path, weak):
    inten, geo, truth = weak
    meta = ScanMetadata(energy=300e3, semiangle=20.0, defocus=tuple(-c for c in C10), scan_step=geo.scan_step,
                        detector_sampling=geo.detector_sampling, detector_center=geo.detector_center, periodic=True)
    path = str(tmp_path / "weak.zarr")
    with write_scan_store(path, meta, scan_shape=geo.scan_shape, detector_shape=geo.detector_shape) as g:
        g["intensity"][:] = inten
    res = reconstruct(open_scan_store(path), get_method("gd", iterations=20), progress=True)
    assert res.phase.shape == (32, 32) and res.pixel_size == pytest.approx((0.2, 0.2))
    assert res.origin == (0.0, 0.0) and res.periodic
    assert res.attrs["method"] == "gd" and res.attrs["iterations"] == 20 and len(res.attrs["losses"]) == 21
    assert res.attrs["final_loss"] == res.attrs["losses"][-1] < 1e-3 * res.attrs["losses"][0]
    np.testing.assert_allclose(res.illumination, 0.25, rtol=1e-3)  # unit-norm probe, 4 pixels per position
    assert phase_mse(res.phase, truth) < 1e-2 * truth.var()  # 20 iterations: measured 2.7e-6 rad²
    # a warm start from that result begins where it ended; a result of another grid is refused
    again = reconstruct(path, get_method("gd", iterations=2, initial=res), progress=False)
    assert again.attrs["initial"] == "given" and again.attrs["initial_loss"] < 0.1 * res.attrs["initial_loss"]
    with pytest.raises(ValueError, match="not this scan's object grid"):
        reconstruct(path, get_method("gd", iterations=1, initial=dataclasses.replace(res, pixel_size=(0.3, 0.3))),
                    progress=False)


def test_dense_form_by_ffts_equals_the_matrix_product():
    """At step = pixel P is circulant: applying it by FFTs gives the product's A, losses and readout.

    One step only: in the dense problem a step's map amplifies differences ≈ 100× (the phase of the
    weak far fields the off-diagonal entries create), so the 1e-6 round-off between FFT and product
    reaches 1e-4 after two steps and 7e-3 after three — two equally monotone paths."""
    from flowtie_dask.projection import shifted_windows

    inten, geo, truth = simulate(8, 0.4)
    data = _sqrt_fft_order(geo.orient(inten[1:2]).reshape(1, 64, 8, 8))
    runs = [_dense_run(data, geo, [1], dev=torch.device("cpu"), iterations=1, lr=None, optimizer="gd",
                       callback=None, use_fft=f) for f in (True, False)]
    (a_f, l_f, ill_f, proj_f), (a_m, l_m, ill_m, proj_m) = runs
    np.testing.assert_allclose(l_f, l_m, rtol=1e-5)
    assert np.abs(a_f - np.eye(64)).max() > 1e-3  # the step moved A
    np.testing.assert_allclose(a_f, a_m, atol=1e-5)
    np.testing.assert_allclose(proj_f, proj_m, atol=1e-5)
    # the readout is the projection of the exit waves A·P: diag(A P Pᴴ) / diag(P Pᴴ)
    ix, iy = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    pos = geo.positions_px(ix.ravel(), iy.ravel(), periodic=True)
    spec = gd.probe_spectra(geo, [1])[0]
    p = shifted_windows(np.broadcast_to(spec, (64, 8, 8)), pos).reshape(64, 64).T
    want = np.diag(a_m @ p @ p.conj().T) / np.diag(p @ p.conj().T).real
    np.testing.assert_allclose(proj_m.ravel(), want, atol=1e-5)
    np.testing.assert_allclose(ill_m.ravel(), np.diag(p @ p.conj().T).real, rtol=1e-5)
    # a scan that skips pixels is not circulant: the FFT path is refused, the product used
    half = dataclasses.replace(geo, scan_shape=(4, 4))
    with pytest.raises(ValueError, match="visits every object pixel once"):
        _dense_run(data[:, :16], half, [1], dev=torch.device("cpu"), iterations=1, lr=None, optimizer="gd",
                   callback=None, use_fft=True)


def _write(path, inten, geo, periodic=True):
    meta = ScanMetadata(energy=300e3, semiangle=20.0, defocus=tuple(-c for c in C10), scan_step=geo.scan_step,
                        detector_sampling=geo.detector_sampling, detector_center=geo.detector_center,
                        periodic=periodic)
    with write_scan_store(path, meta, scan_shape=geo.scan_shape, detector_shape=geo.detector_shape) as g:
        g["intensity"][:] = inten
    return path


def test_gd_dense_method_runs_the_papers_dense_form(tmp_path):
    """``gd-dense`` on a store: the object is the projection of the exit waves A·P (default) or diag(A)
    of :func:`dense_gd_reconstruct`; how much of A is off the diagonal is recorded; what the dense form
    cannot hold is refused."""
    inten, geo, truth = simulate(8, 0.4)
    path = _write(str(tmp_path / "tiny.zarr"), inten, geo)
    res = reconstruct(path, get_method("gd-dense", iterations=30, readout="diagonal"), progress=False)
    a, losses = dense_gd_reconstruct(inten, geo, iterations=30)
    assert res.attrs["form"] == "dense" and res.attrs["initial"] == "A = I" and res.attrs["readout"] == "diagonal"
    np.testing.assert_allclose(res.attrs["losses"], losses, rtol=1e-5)
    obj = np.diag(a).reshape(8, 8)
    assert phase_mse(res.phase, np.angle(obj)) < 1e-10
    np.testing.assert_allclose(res.amplitude, np.abs(obj), rtol=1e-5)
    np.testing.assert_allclose(res.illumination, 1.0, rtol=1e-4)  # unit-norm probe at every pixel
    assert res.attrs["offdiagonal_rms"] > 1e-3  # the fit leaks off the diagonal (the dense form's weakness)
    proj = reconstruct(path, get_method("gd-dense", iterations=30), progress=False)
    assert proj.attrs["readout"] == "projection"
    diag = reconstruct(path, get_method("gd", iterations=30), progress=False)
    # measured: diagonal form 1e-12, dense projected 2.5e-3, dense diag(A) 3.2e-3, zero phase 4.3e-3 rad²
    assert phase_mse(diag.phase, truth) < 1e-3 * phase_mse(proj.phase, truth)
    assert phase_mse(proj.phase, truth) < phase_mse(res.phase, truth) < truth.var()
    with pytest.raises(ValueError, match="unknown method 'gd-sparse'"):
        get_method("gd-sparse")
    with pytest.raises(ValueError, match="readout must be 'projection'"):
        get_method("gd-dense", readout="trace")
    with pytest.raises(ValueError, match="needs a periodic scan"):
        reconstruct(path, get_method("gd-dense"), periodic=False, progress=False)
    with pytest.raises(ValueError, match="takes no option 'batch_size'"):  # the dense form starts from A = I, unbatched
        get_method("gd-dense", batch_size=4)
    part = dataclasses.replace(geo, scan_shape=(4, 4))  # one period of 4 pixels, an 8-pixel window
    small = _write(str(tmp_path / "part.zarr"), inten[:, :4, :4], part)
    with pytest.raises(ValueError, match="object grid equal to the detector window.*form='diagonal'"):
        reconstruct(small, get_method("gd-dense"), progress=False)


def test_dense_form_refuses_what_does_not_fit_in_memory(monkeypatch):
    inten, geo, _ = simulate(8, 0.4)
    monkeypatch.setattr("flowtie_dask.backend.available_memory", lambda device="cpu": 2**10)
    with pytest.raises(ValueError, match=r"dense form needs 0\.0 GiB, more than the 0\.0 GiB.*form='diagonal'"):
        dense_gd_reconstruct(inten, geo, iterations=1)


def test_memory_check_refuses_a_scan_that_does_not_fit(weak, monkeypatch):
    inten, geo, _ = weak
    monkeypatch.setattr("flowtie_dask.backend.available_memory", lambda device="cpu": 2**20)
    with pytest.raises(ValueError, match=r"needs [\d.]+ GiB, more than the 0\.0 GiB available.*--method tie"):
        gd_reconstruct(inten, geo, iterations=1)
    monkeypatch.setattr("flowtie_dask.backend.available_memory", lambda device="cpu": 64 * 2**30)
    big = dataclasses.replace(geo, scan_shape=(2048, 2048), scan_step=(0.2, 0.2), detector_shape=(256, 256),
                              detector_sampling=(1 / (256 * 0.2),) * 2)
    with pytest.raises(ValueError, match=r"needs \d+\.\d GiB, more than the 64\.0 GiB available"):
        _plan_batch(2048 * 2048, 2048 * 2048, big.detector_shape, (2048, 2048), "cpu", None)


def test_memory_estimate_and_available_memory_are_sane():
    assert gd.available_memory("cpu") > 2**26
    est = gd.gd_memory_estimate(1024, (64, 64), (64, 64), batch=256)
    assert 8 * 1024 * 64 * 64 < est < 64 * 1024 * 64 * 64


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: nothing to refuse")
def test_cuda_without_a_gpu_says_so(weak):
    inten, geo, _ = weak
    with pytest.raises(RuntimeError, match="no GPU found"):
        gd_reconstruct(inten, geo, iterations=1, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs torch with CUDA and a GPU; none found")
def test_gd_on_cuda_equals_cpu(weak):
    inten, geo, _ = weak
    obj_c, loss_c = gd_reconstruct(inten, geo, iterations=10)
    obj_g, loss_g = gd_reconstruct(inten, geo, iterations=10, device="cuda")
    np.testing.assert_allclose(loss_g, loss_c, rtol=1e-3)
    assert phase_mse(np.angle(obj_g), np.angle(obj_c)) < 1e-8


def test_a_warm_start_begins_where_the_last_run_ended(weak, weak_gd):
    inten, geo, _ = weak
    obj, losses, _ = weak_gd
    for parametrization in ("complex", "phase"):
        _, again = gd_reconstruct(inten, geo, iterations=2, initial=obj, parametrization=parametrization)
        assert again[0] == pytest.approx(losses[-1], rel=1e-2, abs=1e-12) and again[0] < 1e-6 * losses[0]
    with pytest.raises(ValueError, match="initial object has shape"):
        gd_reconstruct(inten, geo, iterations=1, initial=obj[:-1])

import numpy as np
import pytest

from flowtie_dask.projection import dense_projection, divide_illumination, overlap_add, shifted_windows, unwrap
from flowtie_dask.reconstruct import project_tile
from tests.conftest import design_mse, weak_object_series


def _oracle(inten, psi, g, periodic=True):
    n = g.scan_shape
    _, num, ill = project_tile(inten[1], np.angle(psi), g, xs=range(n[0]), ys=range(n[1]), periodic=periodic)
    return num, ill


def test_oracle_exact_probe_frame_phase_reproduces_the_object():
    inten, psi, obj, g = weak_object_series(64, 0.2)
    num, ill = _oracle(inten, psi, g)
    phase = np.angle(divide_illumination(num, ill, eps=1e-12))
    assert design_mse(phase, obj) < 1e-8
    np.testing.assert_allclose(ill, ill.mean(), rtol=1e-4)  # one position per pixel: uniform illumination


def test_sub_pixel_scan_step_reconstructs_exactly():
    """Scan step 0.3 Å on a 0.2 Å exit-wave grid (1.5 pixels): Fourier-shifted windows place it exactly."""
    inten, psi, obj, g = weak_object_series(48, 0.2, scan_step=0.3)
    assert g.scan_shape == (32, 32) and g.pixel == pytest.approx((0.2, 0.2))
    num, ill = _oracle(inten, psi, g)
    assert design_mse(np.angle(divide_illumination(num, ill, eps=1e-9)), obj) < 1e-8
    # rounding the positions to whole pixels instead is visibly wrong
    pos = g.positions_px(np.arange(32), np.zeros(32, int))
    assert np.any(np.abs(pos[:, 0] - np.round(pos[:, 0])) > 0.4)


def test_cropped_detector_still_reconstructs():
    """A 32-pixel detector cropped from a 64-pixel far field (±24.6 of ±49 mrad, just beyond the 20 mrad
    bright field): the exit-wave pixel doubles to 0.4 Å and the reconstruction still holds."""
    from flowtie_dask.reconstruct import tie_phase_of_tile

    full = weak_object_series(64, 0.2)
    crop = weak_object_series(64, 0.2, detector=32)
    g = crop[3]
    assert g.pixel == pytest.approx((0.4, 0.4))
    num, ill = _oracle(crop[0], crop[1], g)
    phase = np.angle(divide_illumination(num, ill))
    assert phase.shape == (32, 32)
    obj_coarse = full[2][::2, ::2]  # the object on the 0.4 Å grid
    mse_oracle = design_mse(phase, obj_coarse)
    i0, tie = tie_phase_of_tile(crop[0], g, boundary="periodic")
    _, num, ill = project_tile(i0, tie, g, xs=range(64), ys=range(64), periodic=True)
    mse_tie = design_mse(np.angle(divide_illumination(num, ill)), obj_coarse)
    var = obj_coarse.var()
    assert mse_oracle < 0.1 * var  # the best the crop allows (measured 0.066·var: its band limit)
    assert mse_tie < 0.5 * var


def test_dense_a_matrix_equals_the_overlap_add():
    """The paper's A_pred = F⁻¹ E Pᴴ: its diagonal is the overlap-add numerator (8×8 periodic case)."""
    rng = np.random.default_rng(0)
    n = 8
    obj = np.exp(1j * 0.3 * rng.standard_normal((n, n)))
    probe_spec = np.zeros((n, n), complex)
    probe_spec[np.hypot(*np.meshgrid(np.fft.fftfreq(n) * n, np.fft.fftfreq(n) * n, indexing="ij")) <= 2.5] = 1
    probe_spec = np.fft.fftshift(probe_spec) / np.sqrt(np.sum(np.abs(probe_spec) ** 2))  # centred, Σ|P̃|² = 1
    p0 = shifted_windows(probe_spec[None], np.zeros((1, 2)))[0]  # unit-norm probe, FFT order
    ix, iy = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    probes = np.stack([np.roll(p0, (a, b), axis=(0, 1)) for a, b in zip(ix.ravel(), iy.ravel())])
    exit_waves = obj[None] * probes
    far = np.fft.fft2(exit_waves)  # lab-frame E(q, r̂)
    a_pred = dense_projection(far, probes)
    assert a_pred.shape == (n * n, n * n)
    # probe-frame spectra for overlap_add: Ψ = E·exp(+2πi q·r̂), centred, unit-sum scale
    k = np.fft.fftfreq(n)
    ramps = np.exp(2j * np.pi * (k[None, :, None] * ix.ravel()[:, None, None] + k[None, None, :] * iy.ravel()[:, None, None]))
    spectra = np.fft.fftshift(far * ramps, axes=(-2, -1)) / n
    num, ill = overlap_add(spectra, probe_spec, np.stack([ix.ravel(), iy.ravel()], 1).astype(float), (n, n),
                           periodic=True)
    np.testing.assert_allclose(np.diag(a_pred).reshape(n, n), num, atol=1e-12)
    np.testing.assert_allclose(num / ill, obj, atol=1e-12)


def test_windows_outside_a_non_periodic_object_are_refused():
    spec = np.ones((1, 4, 4), complex) / 4
    with pytest.raises(ValueError, match="falls outside the object grid"):
        overlap_add(spec, spec[0], np.array([[0.0, 0.0]]), (4, 4), periodic=False)


def test_unwrap_recovers_a_ramp_beyond_pi():
    x = np.linspace(0, 6 * np.pi, 40)
    true = x[:, None] + 0.5 * x[None, :]
    out = unwrap(np.angle(np.exp(1j * true)))
    np.testing.assert_allclose(out - out[0, 0], true - true[0, 0], atol=1e-9)
    small = 0.3 * np.sin(x)[:, None] * np.ones(40)
    np.testing.assert_array_equal(unwrap(small), small)  # nothing to unwrap: untouched


@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("step", [1.0, 0.7, 2.3])
@pytest.mark.parametrize("q", [8, 7])
@pytest.mark.parametrize("jitter", [True, False])
def test_the_cpu_window_adds_equal_the_scatter_of_every_pixel(periodic, step, q, jitter):
    """overlap_add on NumPy adds one window per position (folding a periodic overhang back); the sums equal the
    plain scatter of every window pixel (bincount) for whole-pixel, sub-pixel and coarse steps (each position its
    own fraction, or a grid whose fractions repeat: several positions per class), windows that wrap around a
    periodic object included."""
    import flowtie_dask.projection as projection

    rng = np.random.default_rng(3)
    n = 20 if periodic else 26
    spectra = (rng.standard_normal((30, q, q)) + 1j * rng.standard_normal((30, q, q))).astype(np.complex64)
    probe = (rng.standard_normal((q, q)) + 1j * rng.standard_normal((q, q))).astype(np.complex64)
    grid = np.stack(np.meshgrid(np.arange(6), np.arange(5), indexing="ij"), -1).reshape(-1, 2) * step
    positions = grid + (0.0 if periodic else q // 2 + 2.5) + (rng.random((30, 2)) * 0.3 if step != 1.0 and jitter else 0)
    if periodic:
        positions = positions + 15.0  # windows cross the edge of the 20×20 object and wrap
    fast = projection.overlap_add(spectra, probe, positions, (n, n), periodic=periodic, offset=(1, 2))
    ref_num = np.zeros((n, n), complex)
    ref_ill = np.zeros((n, n))
    psi = projection.shifted_windows(spectra, positions - np.floor(positions))
    pr = projection.shifted_windows(np.broadcast_to(probe, spectra.shape), positions - np.floor(positions))
    u = np.fft.ifftshift(np.arange(q) - q // 2)
    for k in range(len(positions)):  # the slow, obvious reference: every window pixel to its object pixel
        wx, wy = np.floor(positions[k]).astype(int) - (1, 2)
        for a in range(q):
            for b in range(q):
                x, y = wx + u[a], wy + u[b]
                if periodic:
                    x, y = x % n, y % n
                ref_num[x, y] += psi[k, a, b] * np.conj(pr[k, a, b])
                ref_ill[x, y] += abs(pr[k, a, b]) ** 2
    scale = np.abs(ref_num).max()  # complex64 windows: products agree to single precision
    np.testing.assert_allclose(fast[0], ref_num, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(fast[1], ref_ill, rtol=0, atol=1e-6 * ref_ill.max())


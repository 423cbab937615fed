import numpy as np
import pytest

from flowtie_dask.physics import Aberrations, fresnel_propagator, interaction_constant, probe_fourier, wavelength
from flowtie_dask.physics.potentials import assign_slices, projected_potential, slice_thicknesses
from flowtie_dask.simulate.crystals import build_crystal, supercell
from flowtie_dask.simulate.multislice import center_crop, poisson_noise, simulate_positions, transmission_functions
from tests.conftest import weak_phase_object


def _grid_positions(n, step):
    ix, iy = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return np.stack([ix.ravel(), iy.ravel()], 1) * step


def _gaas_setup(n, cells=1, slice_thickness=1.5, band_limit=2 / 3):
    atoms, t = supercell(build_crystal("GaAs"), lateral_cells=(1, 1), thickness_cells=cells)
    L = atoms.cell[0, 0]
    samp = (L / n, L / n)
    dz = slice_thicknesses(t, slice_thickness)
    v = projected_potential(atoms.positions, atoms.get_chemical_symbols(), cell=(L, L), gpts=(n, n),
                            slice_index=assign_slices(atoms.positions[:, 2], dz), n_slices=len(dz))
    tr = transmission_functions(v, interaction_constant(300e3))[None]
    prop = fresnel_propagator((n, n), samp, energy=300e3, thickness=dz[0], band_limit=band_limit)
    return samp, tr, prop


def test_intensity_is_conserved_through_multislice_on_a_full_detector():
    """Every pattern keeps the incident intensity; with the anti-aliasing band limit the only loss is
    the scattering past it (high-angle, from the atom cores), which shrinks as the grid gets finer."""
    def sums(n, band_limit):
        samp, tr, prop = _gaas_setup(n, cells=2, band_limit=band_limit)
        probes = np.stack([probe_fourier((n, n), samp, energy=300e3, semiangle=20, aberrations=Aberrations(C10=c))
                           for c in (20.0, -20.0)])
        inten, _ = simulate_positions(_grid_positions(4, 1.1), probes=probes, transmissions=tr, propagator=prop,
                                      sampling=samp, detector_shape=(n, n))
        return inten.astype(np.float64).sum(axis=(-2, -1))

    np.testing.assert_allclose(sums(128, band_limit=2.0), 1.0, atol=1e-4)  # unitary: 8 slices, 32 patterns
    loss_coarse = 1 - sums(64, band_limit=2 / 3)  # band limit at 74 mrad
    loss_fine = 1 - sums(256, band_limit=2 / 3)  # band limit at 197 mrad
    assert loss_fine.min() > -1e-5 and loss_fine.max() < 1e-3
    assert loss_coarse.max() > 3 * loss_fine.max()


def test_one_slice_equals_the_single_transmission_model():
    n = 48
    samp, tr, prop = _gaas_setup(n, cells=1, slice_thickness=10.0)
    assert tr.shape[1] == 1
    p = probe_fourier((n, n), samp, energy=300e3, semiangle=20, aberrations=Aberrations(C10=-30))
    pos = _grid_positions(4, 0.9) + 0.05  # sub-pixel positions
    inten, pf = simulate_positions(pos, probes=p[None], transmissions=tr, propagator=prop, sampling=samp,
                                   detector_shape=(n, n), probe_frame_index=0)
    # reference: I(q) = |F[P(r - r0) O(r)]|^2 / N, with the probe moved by a Fourier shift, one position at a time
    k = np.fft.fftfreq(n, samp[0])
    for b, (x0, y0) in enumerate(pos):
        shifted = np.fft.ifft2(p * np.exp(-2j * np.pi * (k[:, None] * x0 + k[None, :] * y0)))
        far = np.fft.fft2(shifted * tr[0, 0]) * prop  # the propagator's phase does not change |E|
        ref = np.fft.fftshift(np.abs(far) ** 2) / n**2
        np.testing.assert_allclose(inten[0, b], ref, rtol=2e-4, atol=1e-9)
        ramp = np.exp(2j * np.pi * (k[:, None] * x0 + k[None, :] * y0))
        np.testing.assert_allclose(pf[b], np.fft.fftshift(far * ramp) / n, atol=2e-6)


def test_probe_frame_wave_in_vacuum_is_the_probe_at_every_position():
    n = 32
    samp = (0.25, 0.25)
    p = probe_fourier((n, n), samp, energy=300e3, semiangle=25, aberrations=Aberrations(C10=15))
    vac = np.ones((1, 1, n, n), np.complex64)
    prop = np.ones((n, n), np.complex64)
    _, pf = simulate_positions(_grid_positions(5, 0.37), probes=p[None], transmissions=vac, propagator=prop,
                               sampling=samp, detector_shape=(n, n), probe_frame_index=0)
    expected = np.fft.fftshift(p) / n
    for b in range(pf.shape[0]):
        np.testing.assert_allclose(pf[b], expected, atol=1e-6)


def test_tie_relation_holds_on_simulated_data():
    """∂I/∂C10 by finite difference at C10 = ±20 Å matches −(λ/2π)∇·(I∇φ_E) (DESIGN §3, §6)."""
    n, step = 64, 0.2
    samp, lam = (step, step), wavelength(300e3)
    phase = weak_phase_object(n, step, 0.3)
    tr = np.exp(1j * phase)[None, None].astype(np.complex64)
    prop = np.ones((n, n), np.complex64)
    probes = np.stack([probe_fourier((n, n), samp, energy=300e3, semiangle=20, aberrations=Aberrations(C10=c))
                       for c in (20.0, 0.0, -20.0)])
    inten, pf = simulate_positions(_grid_positions(n, step), probes=probes, transmissions=tr, propagator=prop,
                                   sampling=samp, detector_shape=(n, n), probe_frame_index=1)
    inten = inten.reshape(3, n, n, n, n).astype(np.float64)
    psi = pf.reshape(n, n, n, n).astype(np.complex128)
    fd = (inten[0] - inten[2]) / 40.0  # C10 = +20 minus C10 = -20
    k = 2j * np.pi * np.fft.fftfreq(n, step)

    def d(f, ax):  # spectral derivative over a scan axis (periodic scan)
        shape = [1] * 4
        shape[ax] = n
        return np.fft.ifft(np.fft.fft(f, axis=ax) * k.reshape(shape), axis=ax)

    # lab frame: I∇φ_E = Im(Ψ*∇Ψ) − 2πq I, with q the detector coordinate of each pattern pixel
    q = (np.arange(n) - n // 2) / (n * step)
    i0 = np.abs(psi) ** 2
    jx = np.imag(np.conj(psi) * d(psi, 0)) - 2 * np.pi * q[None, None, :, None] * i0
    jy = np.imag(np.conj(psi) * d(psi, 1)) - 2 * np.pi * q[None, None, None, :] * i0
    rhs = -(lam / (2 * np.pi)) * np.real(d(jx, 0) + d(jy, 1))
    err = np.linalg.norm(fd - rhs) / np.linalg.norm(rhs)
    err_opposite = np.linalg.norm(-fd - rhs) / np.linalg.norm(rhs)
    assert err < 0.2
    assert err_opposite > 5 * err


def test_batching_does_not_change_the_result():
    n = 32
    samp, tr, prop = _gaas_setup(n)
    probes = probe_fourier((n, n), samp, energy=300e3, semiangle=20)[None]
    pos = _grid_positions(5, 1.1)
    a, _ = simulate_positions(pos, probes=probes, transmissions=tr, propagator=prop, sampling=samp, detector_shape=(24, 24))
    b, _ = simulate_positions(pos, probes=probes, transmissions=tr, propagator=prop, sampling=samp,
                              detector_shape=(24, 24), batch_size=3)
    np.testing.assert_array_equal(a, b)


def test_center_crop_puts_zero_frequency_at_n_over_2():
    x = np.zeros((10, 10))
    x[0, 0] = 1
    c = center_crop(x, (6, 6))
    assert c.shape == (6, 6) and c[3, 3] == 1
    with pytest.raises(ValueError, match="larger than the simulation grid"):
        center_crop(x, (12, 12))


def test_poisson_noise_has_the_right_statistics_and_is_keyed_per_pattern():
    patterns = np.full((400, 4, 4), 1 / 16, np.float32)
    keys = np.stack([np.zeros(400), np.arange(400)], 1).astype(int)
    noisy = poisson_noise(patterns, electrons=1600.0, seed=3, keys=keys)
    counts = noisy * 1600
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)
    assert counts.mean() == pytest.approx(100, rel=0.02)
    assert counts.var() == pytest.approx(100, rel=0.1)
    again = poisson_noise(patterns[10:20], electrons=1600.0, seed=3, keys=keys[10:20])
    np.testing.assert_array_equal(again, noisy[10:20])
    with pytest.raises(ValueError, match="must be positive"):
        poisson_noise(patterns, electrons=0, seed=0, keys=keys)

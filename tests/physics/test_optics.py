import numpy as np
import pytest

from flowtie_dask.physics import Aberrations, aperture, fresnel_propagator, probe_fourier, probe_real, wavelength
from flowtie_dask.physics.optics import antialias_mask, defocus_to_c10, shift_phase

SHAPE, SAMPLING = (64, 64), (0.2, 0.2)


@pytest.mark.parametrize("c10", [-50.0, 0.0, 120.0])
def test_probe_has_unit_norm_in_real_and_reciprocal_space(c10):
    p = probe_fourier(SHAPE, SAMPLING, energy=300e3, semiangle=20, aberrations=Aberrations(C10=c10, C30=1e5))
    assert np.sum(np.abs(p) ** 2) == pytest.approx(SHAPE[0] * SHAPE[1], rel=1e-12)
    assert np.sum(np.abs(probe_real(SHAPE, SAMPLING, energy=300e3, semiangle=20)) ** 2) == pytest.approx(1, rel=1e-12)


def test_aperture_radius_is_the_semiangle():
    lam = wavelength(300e3)
    a = aperture(SHAPE, SAMPLING, energy=300e3, semiangle=20)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(64, 0.2), np.fft.fftfreq(64, 0.2), indexing="ij"))
    assert np.all(a[k * lam * 1e3 <= 19.9] == 1) and np.all(a[k * lam * 1e3 > 20.1] == 0)


def test_soft_edge_is_half_transmitting_at_the_semiangle():
    a = aperture(SHAPE, SAMPLING, energy=300e3, semiangle=20, edge=4.0)
    lam = wavelength(300e3)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(64, 0.2), np.fft.fftfreq(64, 0.2), indexing="ij")) * lam * 1e3
    np.testing.assert_allclose(a, np.clip((20 - k) / 4 + 0.5, 0, 1))


def test_propagating_a_focused_probe_adds_to_c10():
    # free space over z is exp(-i pi lam z k^2) = a change of C10 by +z, i.e. defocus -z (overfocus)
    z = 37.0
    p0 = probe_fourier(SHAPE, SAMPLING, energy=300e3, semiangle=20)
    prop = fresnel_propagator(SHAPE, SAMPLING, energy=300e3, thickness=z, band_limit=2.0)
    pz = probe_fourier(SHAPE, SAMPLING, energy=300e3, semiangle=20, aberrations=Aberrations(C10=z))
    np.testing.assert_allclose(p0 * prop, pz, atol=1e-12)
    assert defocus_to_c10(-z) == z


def test_defocus_spreads_the_probe():
    focused = np.abs(probe_real(SHAPE, SAMPLING, energy=300e3, semiangle=20)) ** 2
    defocused = np.abs(probe_real(SHAPE, SAMPLING, energy=300e3, semiangle=20,
                                  aberrations=Aberrations(C10=defocus_to_c10(100.0)))) ** 2
    assert focused.max() > 3 * defocused.max()
    assert focused.argmax() == 0  # centred on the grid origin


def test_antialias_mask_keeps_two_thirds_of_nyquist():
    m = antialias_mask(SHAPE, SAMPLING)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(64, 0.2), np.fft.fftfreq(64, 0.2), indexing="ij"))
    kmax = 2 / 3 * 0.5 / 0.2
    assert np.all(m[k <= kmax * 0.999] == 1) and np.all(m[k > kmax * 1.001] == 0)


def test_shift_phase_moves_a_probe_by_whole_and_sub_pixels():
    p = probe_fourier(SHAPE, SAMPLING, energy=300e3, semiangle=20)
    shifted = np.fft.ifft2(p * shift_phase(np.array([[0.6, 1.0]]), SHAPE, SAMPLING)[0])
    np.testing.assert_allclose(shifted, np.roll(np.fft.ifft2(p), (3, 5), axis=(0, 1)), atol=1e-12)
    # half a pixel (0.1 Å): the symmetric probe now sits midway between pixels 0 and 1 along x
    half = np.abs(np.fft.ifft2(p * shift_phase(np.array([[0.1, 0.0]]), SHAPE, SAMPLING)[0]))
    np.testing.assert_allclose(half[0], half[1], rtol=1e-9)
    np.testing.assert_allclose(half[-1], half[2], rtol=1e-9)
    assert not np.allclose(half[0], half[2])


def test_nonpositive_semiangle_is_rejected():
    with pytest.raises(ValueError, match="semiangle must be positive"):
        probe_fourier((8, 8), (0.1, 0.1), energy=300e3, semiangle=0.0)

"""The diffraction-power consistency of the projection (flowtie_dask.consistency, project_tile(consistency=))."""

import numpy as np
import pytest

from flowtie_dask.consistency import (predicted_far_fields, predicted_patterns, ring_gains, ring_index, ring_sums,
                                      statistics_subset)
from flowtie_dask.methods import get_method
from flowtie_dask.projection import divide_illumination, overlap_add
from flowtie_dask.reconstruct import project_tile
from tests.conftest import design_mse, weak_object_series


def _probe(n, radius):
    q = np.hypot(*np.meshgrid(np.arange(n) - n // 2, np.arange(n) - n // 2, indexing="ij"))
    p = (q <= radius).astype(complex) * np.exp(0.3j * q)  # an aberrated disk
    return p / np.sqrt(np.sum(np.abs(p) ** 2))


@pytest.mark.parametrize("periodic", [True, False])
def test_forward_model_is_the_adjoint_of_the_overlap_add(periodic):
    """Re⟨O, Σ window(ψ̂)·P*⟩ = Re⟨F[O·P], Ψ⟩ for any spectra Ψ: the forward model reads the very object pixels,
    sub-pixel shifts and probe the projection writes (checked against overlap_add, not against itself)."""
    rng = np.random.default_rng(1)
    q, shape, offset = 16, (40, 44), ((0, 0) if periodic else (-5, 3))
    probe = _probe(q, 5)
    pos = rng.uniform(0, 30, size=(37, 2)) if periodic else rng.uniform(0, 20, size=(37, 2)) + np.array([offset]) + q // 2 + 1
    spectra = rng.standard_normal((37, q, q)) + 1j * rng.standard_normal((37, q, q))
    obj = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    num, _ = overlap_add(spectra, probe, pos, shape, periodic=periodic, offset=offset)
    far = predicted_far_fields(obj, pos, probe, offset=offset, periodic=periodic)
    lhs = np.vdot(obj, num).real
    rhs = np.vdot(far, spectra).real
    assert lhs == pytest.approx(rhs, rel=1e-10)


def test_forward_model_of_plane_waves():
    """A unit object scatters the probe's own spectrum |P̃|²; a tilt exp(2πi k·r) by k pixels shifts it by k."""
    q, n = 16, 48
    probe = _probe(q, 4)
    pos = np.array([[20.0, 21.0], [23.4, 19.7]])
    unit = predicted_patterns(np.ones((n, n), complex), pos, probe, periodic=True)
    np.testing.assert_allclose(unit, np.broadcast_to(np.abs(probe) ** 2, unit.shape), atol=1e-12)
    x = np.arange(n)
    tilt = np.exp(2j * np.pi * (3 * x[:, None] - 6 * x[None, :]) / n)  # (3, −6) cycles per 48 px = (1, −2) q px
    shifted = predicted_patterns(tilt, pos, probe, periodic=True)
    np.testing.assert_allclose(shifted, np.broadcast_to(np.roll(np.abs(probe) ** 2, (1, -2), (0, 1)), unit.shape),
                               atol=1e-12)


def test_ring_gains_and_sums():
    rings = ring_index((8, 8))
    assert rings[4, 4] == 0 and rings[4, 7] == 3 and rings[0, 0] == 6  # round(√32) = 6
    pats = np.ones((3, 8, 8))
    sums = ring_sums(pats, rings)
    np.testing.assert_allclose(sums, 3 * np.bincount(rings.ravel()))
    g = ring_gains(np.array([4.0, 1.0, 0.0, 1.0]), np.array([1.0, 4.0, 1.0, 0.0]))
    np.testing.assert_allclose(g, [2.0, 0.5, 1.0, 1.0])  # no gain where either side holds nothing


def test_statistics_subset_is_regular_and_large_enough():
    idx = statistics_subset((64, 64), positions=1024)
    assert len(idx) == 1024 and np.all(np.diff(idx.reshape(32, 32), axis=1) == 2)
    assert len(statistics_subset((10, 12), positions=1024)) == 120
    assert len(statistics_subset((100, 100), positions=1000)) >= 1000


def _project(inten, phase, g, consistency, **kw):
    n = g.scan_shape
    _, num, ill = project_tile(inten, phase, g, xs=range(n[0]), ys=range(n[1]), periodic=True,
                               consistency=consistency, **kw)
    return divide_illumination(num, ill, eps=1e-9)


def test_exact_phases_need_no_correction():
    """With the exact probe-frame phase every ring's predicted power is the measured one: the iterations leave
    the object as it was."""
    inten, psi, obj, g = weak_object_series(48, 0.2)
    plain = _project(inten[1], np.angle(psi), g, 0)
    corrected = _project(inten[1], np.angle(psi), g, 2)
    assert design_mse(np.angle(plain), obj) < 1e-8
    assert np.max(np.abs(corrected - plain)) < 1e-3 * np.max(np.abs(plain))


def test_dark_field_phase_errors_lose_power_that_the_iterations_restore():
    """Random phase errors on the dark-field pixels (σ = 1 rad) make the overlapping exit waves disagree: the
    projected object scatters less into the dark field than was measured, and its phase is worse. The
    consistency iterations bring the dark-field power back towards the measured and lower the phase error."""
    inten, psi, obj, g = weak_object_series(48, 0.2)
    i0, q = inten[1], inten.shape[-1]
    rng = np.random.default_rng(3)
    rings = ring_index((q, q))
    radius = 20e-3 / g.wavelength / g.detector_sampling[0]  # the bright-field disk in pixels
    dark = rings > radius + 1
    phase = np.angle(psi) + np.where(dark, rng.normal(0, 1.0, psi.shape), 0.0)
    pos = g.positions_px(*[a.ravel() for a in np.meshgrid(np.arange(48), np.arange(48), indexing="ij")])
    measured = ring_sums(i0, rings)

    def dark_power_ratio(o):
        pred = ring_sums(predicted_patterns(o, pos, g.probe_spectrum(), periodic=True), rings)
        sel = np.arange(len(measured)) > radius + 1
        return pred[sel].sum() / measured[sel].sum()

    plain, corrected = _project(i0, phase, g, 0), _project(i0, phase, g, 2)
    assert dark_power_ratio(plain) < 0.7  # power lost (e^{−σ²} ≈ 0.37 for the coherent part)
    assert dark_power_ratio(corrected) > dark_power_ratio(plain) + 0.15
    assert design_mse(np.angle(corrected), obj) < 0.9 * design_mse(np.angle(plain), obj)
    # the limit bounds the correction: with limit 1 nothing changes
    np.testing.assert_allclose(_project(i0, phase, g, 2, consistency_limit=1.0), plain, atol=1e-12)


@pytest.mark.parametrize("rows,cols", [(slice(10, 11), slice(0, 32)), (slice(5, 7), slice(20, 21)), (slice(0, 48), slice(0, 48))])
def test_exact_phases_need_no_correction_on_small_non_periodic_tiles(rows, cols):
    """A row, a 2×1 block and the whole scan projected as non-periodic partials: the forward model sees the
    object as the projection made it (no regulariser damping the probe's tails), so exact phases give gains of 1."""
    inten, psi, _, g = weak_object_series(48, 0.2)
    i0, ph = inten[1][rows, cols], np.angle(psi)[rows, cols]
    xs, ys = range(rows.start, rows.stop), range(cols.start, cols.stop)
    _, plain, _ = project_tile(i0, ph, g, xs=xs, ys=ys, periodic=False)
    _, corrected, _ = project_tile(i0, ph, g, xs=xs, ys=ys, periodic=False, consistency=2)
    assert np.max(np.abs(corrected - plain)) < 1e-5 * np.max(np.abs(plain))


def test_the_scan_frame_probe_sits_where_the_turned_windows_put_it():
    """On a detector turned by 27° with the beam 4 px off the layout's centre, the forward model's probe (evaluated
    on the scan's axes) has its aperture where the projection's shear-turned probe window has it; evaluating it
    with the detector-frame centre would put it 2·sin(θ/2)·|offset| ≈ 2 px away."""
    import dataclasses

    from flowtie_dask.projection import shifted_windows
    from flowtie_dask.reconstruct import _scan_frame_probe

    _, _, _, g = weak_object_series(64, 0.2)
    g = dataclasses.replace(g, detector_center=(29.0, 35.5), window_rotation=27.0)
    q = 64
    turned = shifted_windows(g.probe_spectrum()[None], np.zeros((1, 2)), rotation=27.0)[0]
    turned = np.abs(np.fft.fftshift(np.fft.fft2(turned))) ** 2

    def centroid(p):
        i, j = np.meshgrid(np.arange(q), np.arange(q), indexing="ij")
        return np.array([(p * i).sum(), (p * j).sum()]) / p.sum()

    ours = centroid(np.abs(_scan_frame_probe(g, np)[0]) ** 2)
    naive = centroid(np.abs(dataclasses.replace(g, window_rotation=0.0).probe_spectrum()) ** 2)
    target = centroid(turned)
    assert np.hypot(*(ours - target)) < 0.2
    assert np.hypot(*(naive - target)) > 1.5


def test_the_option_is_checked_and_recorded():
    assert get_method("tie").consistency == 0 and get_method("flowtie").consistency == 2  # TIE: the classical one
    assert get_method("tie", consistency=0).attrs()["consistency"] == 0
    assert get_method("tie", consistency=1).identity() != get_method("tie", consistency=2).identity()
    for bad in (-1, 1.5, True, float("nan"), "2"):
        with pytest.raises(ValueError, match="consistency"):
            get_method("tie", consistency=bad)
    with pytest.raises(ValueError, match="consistency_limit"):
        inten, psi, _, g = weak_object_series(16, 0.4)
        _project(inten[1], np.angle(psi), g, 1, consistency_limit=0.5)

import pytest

from flowtie_dask.physics import interaction_constant, wavelength


def test_wavelength_300kv():
    assert wavelength(300e3) == pytest.approx(0.019688, rel=1e-4)


def test_wavelength_matches_design_formula():
    for e in (60e3, 80e3, 200e3, 300e3):
        assert wavelength(e) == pytest.approx(12.2643 / (e * (1 + 0.978476e-6 * e)) ** 0.5, rel=1e-5)


def test_interaction_constant_300kv():
    assert interaction_constant(300e3) == pytest.approx(6.526e-4, rel=1e-4)
    assert interaction_constant(200e3) == pytest.approx(7.2884e-4, rel=1e-4)  # external data's meta.json


def test_nonpositive_energy_is_rejected():
    with pytest.raises(ValueError, match="energy must be positive"):
        wavelength(0)

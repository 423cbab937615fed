import math

import numpy as np
import pytest

from flowtie_dask.physics import mean_inner_potential, projected_potential, scattering_factor
from flowtie_dask.physics.potentials import assign_slices, kirkland_table, slice_thicknesses
from flowtie_dask.simulate.crystals import _prototype_atoms, gaas, srtio3


@pytest.mark.parametrize(
    "atoms,expected",
    [
        (lambda: _prototype_atoms("diamond", ["Si"], 5.431), 13.9),
        (lambda: gaas().atoms, 15.3),
        (lambda: srtio3().atoms, 22.3),
    ],
)
def test_mean_inner_potential_from_the_table(atoms, expected):
    assert mean_inner_potential(atoms()) == pytest.approx(expected, rel=0.01)


def test_table_is_shipped_with_the_package():
    t = kirkland_table()
    assert t["Si"]["Z"] == 14 and len(t["Ga"]["a"]) == 3


def test_scattering_factor_matches_the_formula_by_hand():
    p = kirkland_table()["O"]
    q = 0.7
    by_hand = sum(a / (q * q + b) for a, b in zip(p["a"], p["b"])) + sum(
        c * math.exp(-d * q * q) for c, d in zip(p["c"], p["d"]))
    assert float(scattering_factor("O", q)) == pytest.approx(by_hand, rel=1e-12)
    assert scattering_factor("Ga", 0.0) > scattering_factor("Ga", 2.0) > 0


def test_unknown_element_is_named():
    with pytest.raises(ValueError, match="'Xx' is not in the Kirkland table"):
        scattering_factor("Xx", 0.1)


def test_projected_potential_mean_is_mip_times_thickness():
    cell = gaas().atoms
    a = cell.cell[0, 0]
    v = projected_potential(cell.positions, cell.get_chemical_symbols(), cell=(a, a), gpts=(48, 48))
    assert v.shape == (1, 48, 48)
    assert v.mean() == pytest.approx(mean_inner_potential(cell) * a, rel=1e-10)


def test_projected_potential_matches_a_slow_direct_fourier_sum():
    # one O atom off-grid in a 5 Å cell: evaluate the Fourier series at a few points by brute force
    pos = np.array([[1.3, 2.2, 0.0]])
    n, L = 16, 5.0
    v = projected_potential(pos, ["O"], cell=(L, L), gpts=(n, n))[0]
    k = np.fft.fftfreq(n, L / n)
    for ix, iy in [(0, 0), (3, 7), (11, 2)]:
        r = np.array([ix * L / n, iy * L / n])
        total = 0.0
        for kx in k:
            for ky in k:
                f = float(scattering_factor("O", math.hypot(kx, ky)))
                total += f * np.cos(2 * math.pi * (kx * (r[0] - pos[0, 0]) + ky * (r[1] - pos[0, 1])))
        assert v[ix, iy] == pytest.approx(47.878 / L**2 * total, rel=1e-9)


def test_potential_peaks_on_the_atom():
    v = projected_potential(np.array([[2.5, 1.25, 0]]), ["Sr"], cell=(5.0, 5.0), gpts=(40, 40))[0]
    assert np.unravel_index(v.argmax(), v.shape) == (20, 10)


def test_slices_are_equal_and_atoms_on_boundaries_go_deeper():
    dz = slice_thicknesses(5.6533, 1.5)
    assert len(dz) == 4 and dz.sum() == pytest.approx(5.6533)
    z = np.array([0.0, 1.4133249999, 1.413325, 5.65])
    np.testing.assert_array_equal(assign_slices(z, dz), [0, 1, 1, 3])
    with pytest.raises(ValueError, match="slice thickness must be positive"):
        slice_thicknesses(5.0, 0.0)

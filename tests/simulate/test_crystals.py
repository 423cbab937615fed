import numpy as np
import pytest

from flowtie_dask.simulate.crystals import PROTOTYPES, build_crystal, random_cubic, read_structure, supercell


def test_gaas_and_srtio3():
    g = build_crystal("GaAs")
    assert g.atoms.get_chemical_formula() == "As4Ga4"
    np.testing.assert_allclose(np.diag(g.atoms.cell), 5.6533)
    s = build_crystal("SrTiO3")
    assert s.atoms.get_chemical_formula() == "O3SrTi"
    np.testing.assert_allclose(np.diag(s.atoms.cell), 3.905)
    # nearest Ga–As distance of zincblende is a·√3/4
    d = g.atoms.get_distances(0, range(len(g.atoms)), mic=True)
    assert np.sort(d)[1] == pytest.approx(5.6533 * 3**0.5 / 4, rel=1e-9)


def test_random_cubic_is_seeded_plausible_and_covers_all_prototypes():
    a, b = random_cubic(7), random_cubic(7)
    assert a.name == b.name and np.allclose(a.atoms.positions, b.atoms.positions)
    crystals = [random_cubic(s) for s in range(200)]
    assert {c.prototype for c in crystals} == set(PROTOTYPES)
    assert len({c.name for c in crystals}) > 100
    for c in crystals:
        lat = c.atoms.cell[0, 0]
        assert 2.8 <= lat <= 6.6
        assert np.allclose(c.atoms.cell, np.eye(3) * lat)
        # no two atoms closer than 1 Å in any of them
        d = c.atoms.get_all_distances(mic=True)
        assert d[np.triu_indices(len(c.atoms), 1)].min() > 1.0


def test_structure_file_through_ase(tmp_path):
    import ase.io
    from ase.build import bulk

    path = tmp_path / "mgo.cif"
    ase.io.write(path, bulk("MgO", "rocksalt", a=4.212, cubic=True))
    c = build_crystal(str(path))
    assert c.prototype == "file" and c.atoms.get_chemical_formula() == "Mg4O4"
    np.testing.assert_allclose(np.diag(c.atoms.cell), 4.212, rtol=1e-6)


def test_non_orthogonal_cell_and_bad_material_are_rejected(tmp_path):
    import ase.io
    from ase.build import bulk

    path = tmp_path / "prim.cif"
    ase.io.write(path, bulk("Si", "diamond", a=5.43))  # primitive fcc cell
    with pytest.raises(ValueError, match="orthogonal cell"):
        read_structure(path)
    with pytest.raises(ValueError, match="unknown material 'Unobtainium'"):
        build_crystal("Unobtainium")


def test_supercell_by_cells_and_by_angstrom():
    g = build_crystal("GaAs")
    atoms, t = supercell(g, lateral_cells=(2, 3), thickness_cells=5)
    assert len(atoms) == 8 * 30 and t == pytest.approx(5 * 5.6533)
    np.testing.assert_allclose(np.diag(atoms.cell), [2 * 5.6533, 3 * 5.6533, 5 * 5.6533])
    atoms, t = supercell(g, lateral_cells=(1, 1), thickness=7.0)
    assert t == 7.0 and atoms.positions[:, 2].max() < 7.0
    assert len(atoms) == 8 + 2  # one cell plus the layer at z = a
    with pytest.raises(ValueError, match="exactly one"):
        supercell(g, lateral_cells=(1, 1))

"""Training sets across optics: the seeded draw, the range file, the random structures and the collection record."""

import json

import numpy as np
import pytest

from flowtie_dask.physics.constants import wavelength
from flowtie_dask.simulate.collection import simulate_collection
from flowtie_dask.simulate.crystals import random_cubic
from flowtie_dask.simulate.optics_range import DEFAULT_OPTICS_RANGE, draw_optics, load_optics_range
from flowtie_dask.simulate.parameters import SimulationParameters
from flowtie_dask.simulate.random_structures import decorate, random_crystal
from flowtie_dask.store import open_scan_store


def test_draw_is_seeded_and_realises_the_ranges():
    ranges = load_optics_range("default")
    base = SimulationParameters(material="random-crystal")
    draws = [draw_optics(base, ranges, seed)[1] for seed in range(40)]
    assert draws[3] == draw_optics(base, ranges, 3)[1]
    for key in ("energy_kV", "semiangle_mrad", "defocus_step_A", "thickness_A"):
        lo, hi = ranges[key]
        values = [d[key] for d in draws]
        assert lo <= min(values) and max(values) <= hi, key
        assert max(values) - min(values) > 0.5 * (hi - lo), key  # spread over the range
    assert any(d["cs_um"] > 0 for d in draws) and any(d["cs_um"] == 0 for d in draws)
    assert {d["frozen_phonons"] for d in draws} == {1, 2}
    for d in draws:
        lam = wavelength(d["energy_kV"] * 1e3)
        disk = d["semiangle_mrad"] / max(d["detector_mrad_per_pixel"])  # bright-field radius, pixels
        assert 4 <= disk and d["detector_pixels"] <= 64 and d["gpts"] >= 1.5 * d["detector_pixels"]
        assert 24 <= min(d["scan_pixels"]) and max(d["scan_pixels"]) <= 40
        cell = d["cell_A"][0]
        assert d["detector_mrad_per_pixel"][0] == pytest.approx(lam / cell * 1e3)
        assert cell / d["gpts"] <= 0.2 + 1e-9  # exit-wave pixel
        for n, step, width in zip(d["scan_pixels"], d["scan_step_A"], d["cell_A"]):
            assert n * step <= width * (1 + 1e-9)  # a window of the cell, or the whole cell
            assert ranges["scan_step_A"][0] - 1e-9 <= step <= ranges["scan_step_A"][1] * 1.5
        assert d["scan_window"] == any(n * s < w * (1 - 1e-9) for n, s, w in zip(d["scan_pixels"], d["scan_step_A"], d["cell_A"]))
    # the detector sampling is drawn, not forced by the step: fine (≤ 0.7 mrad/px) and coarse (≥ 2.5) both occur,
    # and fine scan steps go with fine detector sampling too
    theta = [max(d["detector_mrad_per_pixel"]) for d in draws]
    assert min(theta) <= 0.7 and max(theta) >= 2.5
    assert any(max(d["scan_step_A"]) < 0.2 and max(d["detector_mrad_per_pixel"]) < 1.2 for d in draws)
    assert any(d["scan_window"] for d in draws) and not all(d["scan_window"] for d in draws)


def test_range_file_overrides_and_is_checked(tmp_path):
    f = tmp_path / "r.json"
    f.write_text(json.dumps({"energy_kV": [200, 200], "semiangle_mrad": [25, 25], "phonon_fraction": 0}))
    ranges = load_optics_range(str(f))
    assert ranges["energy_kV"] == [200.0, 200.0] and ranges["defocus_step_A"] == DEFAULT_OPTICS_RANGE["defocus_step_A"]
    p, d = draw_optics(SimulationParameters(material="random-cubic"), ranges, 5)
    assert p.energy == 200e3 and p.semiangle == 25.0 and d["frozen_phonons"] == 1
    for bad, match in [({"energy": [1, 2]}, "unknown key"), ({"energy_kV": [300, 60]}, "low ≤ high"),
                       ({"scan_step_A": "0.1"}, r"\[low, high\]"), ({"phonon_fraction": 2}, r"\[0, 1\]")]:
        f.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=match):
            load_optics_range(str(f))
    with pytest.raises(ValueError, match="does not exist"):
        load_optics_range(str(tmp_path / "missing.json"))


def test_random_crystals_stay_orthogonal_and_vary():
    names = set()
    for seed in range(30):
        c = random_crystal(seed)
        cell = np.asarray(c.atoms.cell)
        assert np.allclose(cell, np.diag(np.diag(cell)), atol=1e-9), c.name
        frac = c.atoms.get_scaled_positions()
        assert frac.min() >= -1e-9 and frac.max() < 1 + 1e-9
        names.add(c.name.split("-")[-1])
    assert {"ortho", "r45", "r27"} <= names
    seed = next(s for s in range(60) if random_crystal(s).name.endswith("-r45"))
    rotated, base = random_crystal(seed).atoms, random_cubic(seed).atoms
    assert len(rotated) == 2 * len(base)  # the 45° cell is √2 a × √2 a: twice the atoms, same density
    assert rotated.cell[0, 0] == pytest.approx(np.sqrt(2) * base.cell[0, 0])
    assert rotated.get_volume() / len(rotated) == pytest.approx(base.get_volume() / len(base))


def test_decorate_substitutes_and_removes_whole_columns():
    atoms = random_crystal(2).atoms.repeat((3, 3, 2))
    for seed in range(20):
        new, changes = decorate(atoms, seed)
        gone = len(atoms) - len(new)
        if "vacancy_columns" in changes:
            assert gone > 0 and gone % 2 == 0  # a column of a 2-cell-thick slab loses at least one atom per cell
        else:
            assert gone == 0
        if "substituted" in changes:  # (a vacancy column may take some of the substituted atoms)
            old, to, n = changes["substituted"]
            assert n - gone <= new.get_chemical_symbols().count(to) - atoms.get_chemical_symbols().count(to) <= n
    assert any("vacancy_columns" in decorate(atoms, s)[1] for s in range(20))
    assert any("substituted" in decorate(atoms, s)[1] for s in range(20))


def test_collection_records_ranges_and_each_draw(tmp_path):
    ranges = {"energy_kV": [80, 120], "thickness_A": [2, 3], "phonon_fraction": 0.0}
    out = simulate_collection(SimulationParameters(material="random-crystal", seed=7), str(tmp_path / "c"), count=2,
                              progress=False, optics_range=ranges)
    index = json.loads((tmp_path / "c" / "collection.json").read_text())
    assert index["optics_range"]["energy_kV"] == [80.0, 120.0]
    for m in index["members"]:
        meta = open_scan_store(f"{out}/{m['path']}").metadata
        assert meta.energy == pytest.approx(m["optics"]["energy_kV"] * 1e3)
        assert meta.scan_step[0] == pytest.approx(m["optics"]["scan_step_A"][0])
        assert 80e3 <= meta.energy <= 120e3


def test_a_scan_window_at_its_own_step_samples_the_same_positions(tmp_path):
    """--scan-step: 3×3 positions 2 covering steps apart see what every other position of the covering scan sees;
    the window is not periodic (4×4 would span the cell again), the covering scan is."""
    from flowtie_dask.simulate.series import simulate_to_store

    common = dict(material="GaAs", lateral_cells=1, thickness_cells=1, detector_pixels=16, gpts=24)
    full = open_scan_store(simulate_to_store(SimulationParameters(**common, scan_pixels=8), str(tmp_path / "f.zarr"),
                                             progress=False))
    step = full.metadata.scan_step[0] * 2
    window = open_scan_store(simulate_to_store(SimulationParameters(**common, scan_pixels=3, scan_step=step),
                                               str(tmp_path / "w.zarr"), progress=False))
    assert full.metadata.periodic and not window.metadata.periodic
    assert window.metadata.scan_step == pytest.approx((step, step))
    np.testing.assert_allclose(np.asarray(window.intensity[:]), np.asarray(full.intensity[:, :6:2, :6:2]), rtol=1e-5,
                               atol=1e-7)
    with pytest.raises(ValueError, match="scan step must be positive"):
        SimulationParameters(scan_step=0.0)


def test_draw_1_is_the_general_models_draw_whole_cells_and_is_checked(tmp_path):
    """"draw": 1 (the set the shipped general model was trained on) scans whole cells at most 40 steps wide, so a
    small step forces coarse detector sampling; draw 2 (the default) does not; the key is checked."""
    base = SimulationParameters(material="random-crystal")
    one, two = load_optics_range({"draw": 1}), load_optics_range("default")
    assert two["draw"] == 2 and one["draw"] == 1
    first = [draw_optics(base, one, seed)[1] for seed in range(1000, 1040)]
    assert not any(d["scan_window"] for d in first)
    for d in first:
        for n, step, width in zip(d["scan_pixels"], d["scan_step_A"], d["cell_A"]):
            assert n * step == pytest.approx(width)  # the whole cell, periodic
    # the same seeds draw the same optics up to the step and the sampling, which the two draws make differently
    second = [draw_optics(base, two, seed)[1] for seed in range(1000, 1040)]
    for a, b in zip(first, second):
        assert (a["energy_kV"], a["semiangle_mrad"], a["defocus_step_A"]) == (b["energy_kV"], b["semiangle_mrad"],
                                                                              b["defocus_step_A"])
    fine = [max(d["detector_mrad_per_pixel"]) for d in first if max(d["scan_step_A"]) < 0.15]
    assert fine and min(fine) > 2.0  # draw 1: fine steps only with coarse sampling
    for bad in (0, 3, "2", True):
        with pytest.raises(ValueError, match="draw must be 1"):
            load_optics_range({"draw": bad})

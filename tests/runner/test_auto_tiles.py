"""Automatic tile sizes follow the bytes a task holds, not a fixed number of positions: the haloed block stays
within the budget as the detector grows, tiles sit on the store's chunks, every thread gets a tile, and the
runner sizes them for the halo its tiles are read with (TIE's global path: none; per-tile solving: the halo)."""

import math

import numpy as np
import pytest

import flowtie_dask.runner as runner
import flowtie_dask.runner.autotile as autotile
import flowtie_dask.runner.tiles as tiles_module
from flowtie_dask.methods import get_method
from flowtie_dask.runner import reconstruct
from flowtie_dask.runner.tiles import MAX_TILE, MIN_TILE, TILE_BYTES, auto_tile_size
from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store


def _block_bytes(tile, scan, detector, halo, scans):
    block = [n if t >= n else min(t + 2 * halo, n) for t, n in zip(tile, scan)]
    return scans * block[0] * block[1] * detector[0] * detector[1] * 4


def _fewest_tiles(n, detector, halo, scans, align, budget):
    """Slow, obvious reference: the fewest tiles per axis of any aligned side whose haloed block fits."""
    fits = [t for t in range(min(n, MAX_TILE), 0, -1) if (t % align == 0 or t == n) and t >= min(MIN_TILE, n)
            and _block_bytes((t, t), (n, n), detector, halo, scans) <= budget]
    return math.ceil(n / fits[0]) if fits else None


@pytest.mark.parametrize("halo, scans", [(16, 3), (0, 3), (0, 1)])
def test_the_block_fits_the_budget_and_the_tile_shrinks_as_the_detector_grows(halo, scans):
    scan, align, sides = (256, 256), 4, []
    for q in (32, 48, 64, 96, 128, 192, 256, 384):
        tile, reason = auto_tile_size(scan, (q, q), halo=halo, scans=scans, align=align)
        assert tile[0] == tile[1] and (tile[0] % align == 0 or tile[0] == scan[0])
        if "over the" in reason:  # only where even the smallest tile does not fit
            assert tile[0] == MIN_TILE and _block_bytes((MIN_TILE,) * 2, scan, (q, q), halo, scans) > TILE_BYTES
            assert "--bin" in reason
        else:
            assert _block_bytes(tile, scan, (q, q), halo, scans) <= TILE_BYTES
            assert math.ceil(scan[0] / tile[0]) == _fewest_tiles(scan[0], (q, q), halo, scans, align, TILE_BYTES)
            assert f"{tile[0]}×{tile[1]} positions per tile" in reason and f"{halo}-position halo" in reason
        sides.append(tile[0])
    assert sides == sorted(sides, reverse=True) and sides[0] > sides[-1], sides


def test_the_former_default_is_kept_at_the_paper_detector_and_the_halo_costs_tile_area():
    """64×64 tiles with a 16-position halo at a 64×64 detector (the fixed default before); with no halo (TIE's
    global path) the same budget would hold larger tiles, which do not pay (MAX_TILE), but at 128×128 pixels
    it holds more than with the halo; a thread count asks for at least that many tiles."""
    assert auto_tile_size((256, 256), (64, 64), halo=16, align=16)[0] == (64, 64)
    assert auto_tile_size((256, 256), (64, 64), halo=0, align=16)[0] == (MAX_TILE, MAX_TILE)
    assert auto_tile_size((256, 256), (128, 128), halo=0, align=8)[0] == (64, 64)  # 3·64²·128²·4 B ≤ 1 GiB
    assert auto_tile_size((256, 256), (128, 128), halo=16, align=8)[0] == (40, 40)  # 73 − 2·16, on the chunks
    assert auto_tile_size((256, 256), (256, 256), halo=0, align=8)[0] == (32, 32)  # 3·36²·256²·4 B ≤ 1 GiB
    tile, _ = auto_tile_size((256, 256), (64, 64), halo=0, align=16, parts=32)
    assert math.ceil(256 / tile[0]) ** 2 >= 32 and tile[0] % 16 == 0
    # a scan narrower than the tile: the tile is clipped to it, the block counted without a halo on that axis
    tile, _ = auto_tile_size((40, 300), (64, 64), halo=16, align=16)
    assert tile[0] == 40 and _block_bytes(tile, (40, 300), (64, 64), 16, 3) <= TILE_BYTES


def test_refused_arguments_are_named():
    with pytest.raises(ValueError, match="halo"):
        auto_tile_size((64, 64), (64, 64), halo=-1)
    with pytest.raises(ValueError, match="detector_shape"):
        auto_tile_size((64, 64), (0, 64), halo=0)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("auto") / "small.zarr"
    return simulate_to_store(SimulationParameters(material="SrTiO3", lateral_cells=2, scan_pixels=24, detector_pixels=24,
                                                  gpts=32), str(path), progress=False)


def test_the_runner_sizes_tiles_for_the_halo_they_are_read_with(small, monkeypatch):
    """With the whole-scan limit and the budget shrunk to this small scan: TIE's global path (no halo) gets the
    largest tiles and equals the whole scan; per-tile solving sizes them for its halo; iCoM (one scan read) gets
    three times the positions per byte."""
    monkeypatch.setattr(runner, "WHOLE_SCAN_BYTES", 0)
    budget = 3 * 14 * 14 * 24 * 24 * 4  # a 14×14-position block of the three scans
    monkeypatch.setattr(autotile, "TILE_BYTES", budget)
    monkeypatch.setattr(tiles_module, "MIN_TILE", 4)
    monkeypatch.setattr(autotile, "_threads_of", lambda client: (1, float("inf")))  # whatever this machine has
    whole = reconstruct(small, get_method("tie"), tile_size=None, progress=False)
    tiled = reconstruct(small, get_method("tie"), progress=False)
    assert tiled.attrs["integration"] == "global" and tiled.attrs["halo"] == 0
    assert tiled.attrs["tile_size"] == [12, 12] and tiled.attrs["n_tiles"] == 4  # 14 evened over 24 positions
    assert "0-position halo" in tiled.attrs["tile_reason"]
    d = tiled.phase - whole.phase
    np.testing.assert_allclose(d - d.mean(), 0, atol=1e-5)
    local = reconstruct(small, get_method("tie"), halo=4, integration="tile", progress=False)
    assert local.attrs["integration"] == "tile" and local.attrs["halo"] == 4
    assert local.attrs["tile_size"] == [6, 6] and "4-position halo" in local.attrs["tile_reason"]  # 14 − 2·4
    assert _block_bytes((6, 6), (24, 24), (24, 24), 4, 3) <= budget
    icom = reconstruct(small, get_method("icom"), progress=False)
    assert icom.attrs["tile_size"] == [24, 24] and "1 scan," in icom.attrs["tile_reason"]  # √3·14 > 24
    assert whole.attrs["tile_reason"] is None
    # eight threads: at least eight tiles; a thread with 4× the budget in memory: the budget
    monkeypatch.setattr(autotile, "_threads_of", lambda client: (8, 4.0 * budget))
    split = reconstruct(small, get_method("tie"), progress=False)
    assert split.attrs["n_tiles"] >= 8 and split.attrs["tile_size"] == [8, 8]
    # a thread with less memory: a quarter of it is the budget (here a 10×10 block at most)
    monkeypatch.setattr(autotile, "_threads_of", lambda client: (1, 4.0 * 3 * 10 * 10 * 24 * 24 * 4))
    assert reconstruct(small, get_method("tie"), progress=False).attrs["tile_size"] == [8, 8]  # 10 evened over 24


def test_a_reduction_splits_even_a_small_scan_a_tile_per_thread_with_the_same_result(small, monkeypatch):
    """A reduction's tiles read no halo and merge exactly, so "auto" gives every worker thread a tile even where
    the whole scan would fit in one (the other methods keep it whole): the same phase as one tile."""
    monkeypatch.setattr(autotile, "_threads_of", lambda client: (2, float("inf")))
    monkeypatch.setattr(tiles_module, "MIN_TILE", 4)
    one = reconstruct(small, get_method("icom"), tile_size=None, progress=False)
    split = reconstruct(small, get_method("icom"), progress=False)
    assert one.attrs["n_tiles"] == 1 and split.attrs["n_tiles"] >= 2, split.attrs["tile_size"]
    assert "1 scan," in split.attrs["tile_reason"]
    np.testing.assert_array_equal(split.phase, one.phase)
    assert reconstruct(small, get_method("tie"), progress=False).attrs["n_tiles"] == 1


def test_a_resumed_run_keeps_the_tiles_of_the_run_it_resumes(small, tmp_path, monkeypatch):
    """The automatic tile follows the workers; a run resuming from a cache takes the choice recorded there (its
    pieces are named by their tiles' first positions), so fewer threads the second time change nothing: the same
    tiles, the pieces loaded, the same phase. Per-tile solving and the global path with kept fields."""
    monkeypatch.setattr(runner, "WHOLE_SCAN_BYTES", 0)
    monkeypatch.setattr(tiles_module, "MIN_TILE", 4)
    for kw in (dict(halo=4, integration="tile"), dict(keep_fields=True)):
        cache = tmp_path / kw.get("integration", "global")
        monkeypatch.setattr(autotile, "_threads_of", lambda client: (8, float("inf")))
        first = reconstruct(small, get_method("tie"), cache=str(cache), progress=False, **kw)
        assert first.attrs["n_tiles"] >= 8
        monkeypatch.setattr(autotile, "_threads_of", lambda client: (2, float("inf")))
        assert reconstruct(small, get_method("tie"), progress=False, **kw).attrs["n_tiles"] < first.attrs["n_tiles"]
        again = reconstruct(small, get_method("tie"), cache=str(cache), progress=False, **kw)
        assert again.attrs["tile_size"] == first.attrs["tile_size"] and "resumes" in again.attrs["tile_reason"]
        assert again.attrs["tiles_reused"] == again.attrs["n_tiles"]
        np.testing.assert_array_equal(again.phase, first.phase)


def test_a_scan_that_fits_one_tile_for_the_global_path_stays_one_tile(small, monkeypatch):
    """Sized without a halo (TIE's global path) the whole scan is one tile: it is solved as one, not cut again for
    the per-tile halo into tiles solved apart."""
    monkeypatch.setattr(runner, "WHOLE_SCAN_BYTES", 0)
    monkeypatch.setattr(autotile, "TILE_BYTES", 3 * 24 * 24 * 24 * 24 * 4)  # the whole scan's three scans
    monkeypatch.setattr(autotile, "_threads_of", lambda client: (1, float("inf")))
    res = reconstruct(small, get_method("tie"), halo=4, progress=False)
    whole = reconstruct(small, get_method("tie"), tile_size=None, halo=4, progress=False)
    assert res.attrs["n_tiles"] == 1 and res.attrs["integration"] == "tile"
    np.testing.assert_array_equal(res.phase, whole.phase)

"""The runner's tiling: tiled equals whole-scan TIE, the Dask graph equals the plain per-tile kernels, tiles
cover the scan once, non-periodic objects, results on disk, and refused arguments."""

import os

import numpy as np
import pytest

from flowtie_dask.evaluate import evaluate_result
from flowtie_dask.geometry import ReconstructionGeometry
from flowtie_dask.methods import get_method
from flowtie_dask.projection import divide_illumination
from flowtie_dask.results import open_result, write_result
from flowtie_dask.runner import reconstruct
from flowtie_dask.runner.graph import accumulate
from flowtie_dask.runner.tasks import tile_task
from flowtie_dask.runner.tiles import plan_tiles
from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store
from flowtie_dask.store import StoreHandle, open_scan_store


@pytest.fixture(scope="module")
def gaas64(tmp_path_factory):
    """The paper's setting: GaAs 2×2 cells, 5.7 Å, 300 kV, 20 mrad, Δf = ±20 Å, 64² scan (step = pixel), 64² detector."""
    path = tmp_path_factory.mktemp("gaas") / "gaas64.zarr"
    return simulate_to_store(SimulationParameters(material="GaAs", lateral_cells=2, thickness_cells=1, scan_pixels=64,
                                                  detector_pixels=64), str(path), progress=False)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("small") / "small.zarr"
    return simulate_to_store(SimulationParameters(material="SrTiO3", lateral_cells=2, scan_pixels=24, detector_pixels=24,
                                                  gpts=32), str(path), progress=False)


@pytest.mark.parametrize("periodic", [True, False])
def test_tiled_equals_whole_scan(gaas64, periodic):
    """TIE on tiles is solved over the whole scan per block of detector rows: it equals the whole-scan TIE to
    rounding, periodic or not (a non-periodic block reads the rows of its q → −q images from its neighbours),
    and reads the tiles without a halo."""
    whole = reconstruct(gaas64, get_method("tie"), periodic=periodic, progress=False)
    assert whole.attrs["integration"] == "tile" and whole.attrs["n_tiles"] == 1
    ev = evaluate_result(whole, gaas64)
    assert ev["mse"] < 0.5 * ev["truth_variance"]
    for tile in (32, (16, 48), (40, 24)):
        tiled = reconstruct(gaas64, get_method("tie"), tile_size=tile, halo=16, periodic=periodic, progress=False)
        assert tiled.attrs["integration"] == "global" and tiled.attrs["halo"] == 0 and tiled.attrs["n_tiles"] > 1
        d = tiled.phase - whole.phase
        np.testing.assert_allclose(d - d.mean(), 0, atol=1e-5)
        np.testing.assert_allclose(tiled.illumination, whole.illumination, rtol=1e-5)
    # solving within each haloed tile instead (the tile path) differs (measured: 3.5 % of the whole-scan MSE on
    # the periodic scan, 93 % on the non-periodic one, mostly in the weakly lit border)
    local = reconstruct(gaas64, get_method("tie"), tile_size=32, halo=16, periodic=periodic, integration="tile",
                        progress=False)
    d = np.angle(np.exp(1j * (local.phase - whole.phase)))
    assert local.attrs["integration"] == "tile" and float(np.mean((d - d.mean()) ** 2)) > 1e-3 * ev["mse"]


def test_consistency_gains_are_taken_per_tile_and_stay_close_to_the_whole_scan(gaas64):
    """The diffraction-power consistency of the projection (TIE --consistency 2) lowers the whole-scan MSE; its
    gains come from each tile's own positions, so tiled results are no longer equal to the whole scan's to
    rounding, but close (measured: rms 0.0001 rad at 32² tiles, 0.0004 rad at 16², the phase's std 0.08 rad)."""
    plain = reconstruct(gaas64, get_method("tie"), progress=False)
    whole = reconstruct(gaas64, get_method("tie", consistency=2), progress=False)
    assert whole.attrs["consistency"] == 2 and plain.attrs["consistency"] == 0
    mse = {k: evaluate_result(r, gaas64)["mse"] for k, r in (("plain", plain), ("whole", whole))}
    assert mse["whole"] < 0.97 * mse["plain"], mse  # measured 0.00235 against 0.00248
    for tile in (16,):  # the smaller tiles, where the per-tile gains differ most
        tiled = reconstruct(gaas64, get_method("tie", consistency=2), tile_size=tile, progress=False)
        assert tiled.attrs["integration"] == "global" and tiled.attrs["consistency"] == 2
        d = tiled.phase - whole.phase
        assert float(np.sqrt(np.mean((d - d.mean()) ** 2))) < 0.02 * float(whole.phase.std())
        assert evaluate_result(tiled, gaas64)["mse"] < 0.98 * mse["plain"]
    # the tile path (each haloed tile solved and projected on its own) takes the option too
    local = reconstruct(gaas64, get_method("tie", consistency=2), tile_size=32, integration="tile", progress=False)
    local0 = reconstruct(gaas64, get_method("tie"), tile_size=32, integration="tile", progress=False)
    assert evaluate_result(local, gaas64)["mse"] < 0.98 * evaluate_result(local0, gaas64)["mse"]


def test_auto_solves_per_tile_when_the_whole_field_would_not_fit(small, monkeypatch):
    """The global path holds the whole scan's field in the workers' memory; "auto" takes it only when that is
    under half of their memory, and says why when it does not; "global" forces it."""
    import flowtie_dask.runner as runner

    monkeypatch.setattr(runner, "_memory_of", lambda client: 1e6)  # 1 MB of workers
    res = reconstruct(small, get_method("tie"), tile_size=12, halo=4, progress=False)
    assert res.attrs["integration"] == "tile" and "over half the memory" in res.attrs["integration_reason"]
    forced = reconstruct(small, get_method("tie"), tile_size=12, halo=4, progress=False, integration="global")
    assert forced.attrs["integration"] == "global" and forced.attrs["integration_reason"] is None
    monkeypatch.setattr(runner, "_memory_of", lambda client: 1e12)
    assert reconstruct(small, get_method("tie"), tile_size=12, halo=4, progress=False).attrs["integration"] == "global"


@pytest.mark.parametrize("tile", [None, (12, 12), (10, 7), (24, 5)])
def test_dask_pipeline_equals_the_plain_kernels(small, tile):
    st = open_scan_store(small)
    g = ReconstructionGeometry.from_metadata(st.metadata, scan_shape=st.scan_shape, detector_shape=st.detector_shape)
    shape, _ = g.object_grid(periodic=True)
    tiles = plan_tiles(st.scan_shape, tile, 4, periodic=True)
    tie, handle = get_method("tie"), StoreHandle(st.path)
    num, ill, _ = accumulate(shape, *[tile_task(handle, g, t, method=tie, periodic=True) for t in tiles])  # inline
    expected = np.angle(divide_illumination(num, ill))
    res = reconstruct(small, tie, tile_size=tile, halo=4, progress=False, integration="tile")
    np.testing.assert_allclose(res.illumination, ill, rtol=1e-10)
    np.testing.assert_allclose(np.angle(np.exp(1j * (res.phase - expected))), 0, atol=1e-6)


def test_tiles_cover_the_scan_once():
    tiles = plan_tiles((10, 7), (4, 3), 2, periodic=False)
    seen = np.zeros((10, 7), int)
    for t in tiles:
        seen[np.ix_(list(t.xs), list(t.ys))] += 1
        rows = np.asarray(t.rows)[t.interior[0]]
        assert list(rows) == list(t.xs)
        assert t.boundary == "mirror"
    assert np.all(seen == 1)
    wrapped = plan_tiles((10, 7), (4, 3), 2, periodic=True)[0]
    assert wrapped.rows[:2] == (8, 9)  # the halo wraps around a periodic scan
    assert plan_tiles((10, 7), None, 2, periodic=True)[0].boundary == "periodic"


def test_non_periodic_reconstruction_of_a_periodic_scan(small):
    res = reconstruct(small, get_method("tie"), periodic=False, progress=False)
    st = open_scan_store(small)
    assert res.phase.shape == (48, 48)  # (Rx − 1)·step/pixel + Q + 1 = 23 + 24 + 1
    assert res.origin[0] < 0
    ev = evaluate_result(res, small)
    per = evaluate_result(reconstruct(small, get_method("tie"), progress=False), small)
    assert ev["mse"] < 0.5 * ev["truth_variance"]
    assert ev["mse"] < 3 * per["mse"]
    assert st.metadata.periodic


def test_result_round_trip_and_preview(small, tmp_path):
    res = reconstruct(small, get_method("tie"), progress=False)
    out = write_result(res, str(tmp_path / "r.zarr"))
    back = open_result(out)
    np.testing.assert_allclose(back.phase, res.phase, atol=1e-6)
    assert back.pixel_size == pytest.approx(res.pixel_size) and back.origin == res.origin
    assert back.attrs["method"] == "tie" and back.attrs["source"] == os.path.abspath(small)
    assert os.path.getsize(os.path.join(out, "preview.png")) > 1000
    with pytest.raises(ValueError, match="already exists"):
        write_result(res, out)
    with pytest.raises(ValueError, match="not a flowtie-dask result"):
        open_result(small)


def test_a_failed_reconstruction_leaves_no_result(small, tmp_path, monkeypatch):
    import flowtie_dask.results as results

    res = reconstruct(small, get_method("tie"), progress=False)
    monkeypatch.setattr(results, "save_preview", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        write_result(res, str(tmp_path / "r.zarr"))
    assert os.listdir(tmp_path) == []


def test_bad_arguments(small):
    with pytest.raises(ValueError, match="unknown method"):
        get_method("magic")
    with pytest.raises(ValueError, match="halo must be"):
        reconstruct(small, get_method("tie"), tile_size=8, halo=-1, progress=False)

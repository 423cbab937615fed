import dask
import numpy as np
import pytest

from flowtie_dask.physics import interaction_constant, mean_inner_potential
from flowtie_dask.simulate.crystals import build_crystal
from flowtie_dask.simulate.series import SimulationParameters, plan_simulation, simulate_block, simulate_series
from flowtie_dask.simulate.series import simulate_to_store
from flowtie_dask.store import open_scan_store
from tests.conftest import requires_gpu

SMALL = dict(material="GaAs", lateral_cells=1, scan_pixels=12, detector_pixels=24, gpts=32)


@pytest.fixture(scope="module")
def plan():
    return plan_simulation(SimulationParameters(**SMALL, probe_frame=True))


@pytest.fixture(scope="module")
def whole(plan):
    return simulate_block(plan, slice(0, 12), slice(0, 12))


@pytest.mark.parametrize("chunks", [(12, 12), (5, 7), (1, 12), (4, 3)])
def test_dask_chunked_equals_unchunked(plan, whole, chunks):
    inten, phase = simulate_series(plan, chunks=chunks)
    assert inten.chunks[1][0] == chunks[0] and inten.chunks[2][0] == chunks[1]
    i, p = dask.compute(inten, phase, scheduler="threads")
    np.testing.assert_allclose(i, whole[0], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(p, whole[1], atol=2e-5)


def test_noise_does_not_depend_on_chunking():
    plan = plan_simulation(SimulationParameters(**SMALL, dose=5e4, seed=11))
    (a,) = dask.compute(simulate_series(plan, chunks=(12, 12))[0], scheduler="sync")
    (b,) = dask.compute(simulate_series(plan, chunks=(5, 4))[0], scheduler="threads")
    np.testing.assert_array_equal(a, b)
    clean, _ = simulate_block(plan_simulation(SimulationParameters(**SMALL)), slice(0, 12), slice(0, 12))
    electrons = plan.metadata.provenance["electrons_per_pattern"]
    assert electrons == pytest.approx(5e4 * (5.6533 / 12) ** 2)
    counts = a * electrons
    np.testing.assert_allclose(counts, np.round(counts), atol=2e-2)
    # shot noise: mean preserved, variance = mean/electrons per pixel
    assert a.sum() == pytest.approx(clean.sum(), rel=2e-3)
    resid = (a - clean)[clean > 1e-3] / np.sqrt(clean[clean > 1e-3] / electrons)
    assert resid.std() == pytest.approx(1.0, rel=0.05)


def test_frozen_phonons_are_seeded_and_average_to_the_static_lattice():
    p1 = plan_simulation(SimulationParameters(**SMALL, frozen_phonons=4, seed=2))
    p2 = plan_simulation(SimulationParameters(**SMALL, frozen_phonons=4, seed=2))
    p3 = plan_simulation(SimulationParameters(**SMALL, frozen_phonons=4, seed=3))
    assert p1.transmissions.shape[0] == 4
    np.testing.assert_array_equal(p1.transmissions, p2.transmissions)
    assert not np.allclose(p1.transmissions, p3.transmissions)
    static = plan_simulation(SimulationParameters(**SMALL))
    # displacements move atoms, not charge: the mean projected potential (MIP) is unchanged
    assert p1.projected_phase.mean() == pytest.approx(static.projected_phase.mean(), rel=1e-10)
    i_static, _ = simulate_block(static, slice(0, 3), slice(0, 3))
    i_tds, _ = simulate_block(p1, slice(0, 3), slice(0, 3))
    assert not np.allclose(i_static, i_tds, atol=1e-5)


def test_truth_is_sigma_times_the_projected_potential(plan):
    crystal = build_crystal("GaAs")
    expected_mean = interaction_constant(300e3) * mean_inner_potential(crystal.atoms) * plan.thickness
    assert plan.projected_phase.shape == (32, 32)
    assert plan.projected_phase.mean() == pytest.approx(expected_mean, rel=1e-9)


def test_store_round_trip(tmp_path, plan, whole):
    out = simulate_to_store(SimulationParameters(**SMALL, probe_frame=True), str(tmp_path / "s.zarr"),
                            chunks=(5, 5), progress=False)
    store = open_scan_store(out)
    assert store.intensity.shape == (3, 12, 12, 24, 24)
    assert store.intensity.chunks == (1, 5, 5, 24, 24)
    np.testing.assert_allclose(store.intensity[:], whole[0], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(store.truth["probe_frame_phase"][:], whole[1], atol=2e-5)
    np.testing.assert_allclose(store.truth["projected_phase"][:], plan.projected_phase, rtol=1e-6)
    assert store.truth["projected_phase"].attrs["pixel_size_A"] == pytest.approx([5.6533 / 32] * 2)
    m = store.metadata
    assert m == plan.metadata.replace(provenance=m.provenance)
    assert m.defocus == (-20.0, 0.0, 20.0) and m.c10 == (20.0, -0.0, -20.0)
    assert m.scan_step == pytest.approx((5.6533 / 12,) * 2)
    assert m.detector_sampling == pytest.approx((1 / 5.6533,) * 2)
    assert m.detector_center == (12.0, 12.0)
    assert m.provenance["parameters"]["scan_pixels"] == [12, 12]
    # compressed on disk
    assert store.intensity.compressors[0].cname.value == "zstd"


def test_a_failed_simulation_leaves_nothing(tmp_path, monkeypatch):
    import flowtie_dask.simulate.series as series

    def boom(*a, **k):
        raise RuntimeError("worker died")

    monkeypatch.setattr(series, "_block_task", boom)
    with pytest.raises(RuntimeError, match="worker died"):
        simulate_to_store(SimulationParameters(**SMALL), str(tmp_path / "s.zarr"), progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(energy=-1), "energy must be positive"),
        (dict(detector_pixels=64, gpts=32), "simulation grid"),
        (dict(scan_pixels=1), "scan pixels"),
        (dict(dose=0), "dose must be positive"),
        (dict(device="tpu"), "device must be"),
    ],
)
def test_bad_parameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimulationParameters(**{**SMALL, **kwargs})


@requires_gpu
def test_gpu_block_equals_cpu_block(whole):
    plan = plan_simulation(SimulationParameters(**SMALL, probe_frame=True, device="gpu"))
    inten, phase = simulate_block(plan, slice(0, 12), slice(0, 12))
    assert isinstance(inten, np.ndarray)
    np.testing.assert_allclose(inten, whole[0], rtol=1e-4, atol=1e-7)
    # the phase is compared as the in-focus wave: where |E| ≈ 0 it is round-off (GPU vs CPU FFTs differed by
    # 3e-3 rad at 6 of 82944 dark pixels)
    amp = np.sqrt(whole[0][1])
    np.testing.assert_allclose(amp * np.exp(1j * phase), amp * np.exp(1j * whole[1]), rtol=0, atol=3e-4 * amp.max())

"""Value checks of every block (flowtie_dask.quality): nothing is touched in realistic data, every spoiling is
found at its exact (global) position and repaired close to the clean truth, bad values are refused by name.

Repairs are compared against slow, obvious references written here with explicit Python loops, and against
the clean block the spoiling was injected into (the physical truth).
"""

import json
import os
import shutil

import numpy as np
import pytest

from flowtie_dask.quality import BadDataError, BlockReport, check_block, check_phase
from tests.conftest import weak_object_series

EXPERIMENT = "/work/shared/data/experiment_like/si_300kV"
GAAS = dict(material="GaAs", lateral_cells=1, scan_pixels=12, detector_pixels=24, gpts=32)


# ------------------------------------------------------------------------------------------------ data


@pytest.fixture(scope="module")
def weak():
    """Noise-free weak phase object, (3, 32, 32, 32, 32) float32, pattern totals 1."""
    inten, _, _, _ = weak_object_series(n=32, step=0.2)
    inten.setflags(write=False)  # any in-place write by the code under test fails loudly
    return inten


@pytest.fixture(scope="module")
def crystal(tmp_path_factory):
    """Noise-free GaAs multislice scan read from a simulated store, (3, 12, 12, 24, 24) float32."""
    from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store
    from flowtie_dask.store import open_scan_store

    path = simulate_to_store(SimulationParameters(**GAAS), str(tmp_path_factory.mktemp("q") / "gaas.zarr"),
                             progress=False)
    block = np.asarray(open_scan_store(path).intensity[:])
    block.setflags(write=False)
    return block


@pytest.fixture(scope="module")
def experiment():
    """The three uint16 experiment-like scans (minus, focus, plus), (3, 40, 40, 64, 64)."""
    if not os.path.exists(os.path.join(EXPERIMENT, "scan_focus.h5")):
        pytest.skip(f"experiment-like data not found at {EXPERIMENT} (not shipped with the repository)")
    pytest.importorskip("hdf5plugin")  # registers the frames' compression filter before h5py reads them
    import h5py

    scans = []
    for name in ("minus", "focus", "plus"):
        with h5py.File(os.path.join(EXPERIMENT, f"scan_{name}.h5"), "r") as f:
            d = f["entry/data/data"]
            assert d.shape == (1600, 64, 64)
            scans.append(d[:].reshape(40, 40, 64, 64))
    block = np.stack(scans)
    assert block.dtype == np.uint16
    block.setflags(write=False)
    return block


def poisson(clean, dose, seed):
    """Shot noise for ``dose`` electrons per pattern (patterns of total ≈ 1), back in beam fractions."""
    rng = np.random.default_rng(seed)
    return (rng.poisson(np.asarray(clean, np.float64) * dose) / dose).astype(np.float32)


def check(block, **kw):
    """check_block with the input verified unchanged afterwards."""
    before = np.array(block, copy=True)
    kw.setdefault("rows", range(block.shape[1]))
    kw.setdefault("cols", range(block.shape[2]))
    kw.setdefault("defocus", range(block.shape[0]))
    out, report = check_block(block, **kw)
    np.testing.assert_array_equal(block, before)  # never modified in place
    assert out.shape == block.shape and out.dtype == block.dtype
    return out, report


# --------------------------------------------------------------------------------------------- references


def ref_pattern_mean(x, dead, i, j):
    """Mean of the live 8-neighbours of pattern (i, j) in the scan (no wrap), x (Rx, Ry, Qx, Qy)."""
    total, n = np.zeros(x.shape[2:], np.float64), 0
    for a in range(i - 1, i + 2):
        for b in range(j - 1, j + 2):
            if (a, b) != (i, j) and 0 <= a < x.shape[0] and 0 <= b < x.shape[1] and not dead[a, b]:
                total += x[a, b]
                n += 1
    return total / n


def ref_pixel_mean(img, bad, qa, qb):
    """Mean of the good 3×3 detector neighbours of (qa, qb) in one pattern (interior pixels only)."""
    assert 0 < qa < img.shape[0] - 1 and 0 < qb < img.shape[1] - 1
    vals = [float(img[a, b]) for a in range(qa - 1, qa + 2) for b in range(qb - 1, qb + 2)
            if (a, b) != (qa, qb) and not bad[a, b]]
    return sum(vals) / len(vals)


def rel_l1(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).sum() / np.abs(np.asarray(b, np.float64)).sum())


def assert_only_changed(out, ref, changed):
    """``out`` equals ``ref`` bitwise except where ``changed`` (bool, same shape)."""
    np.testing.assert_array_equal(out[~changed], ref[~changed])


# --------------------------------------------------------------------------------------- no false positives


def test_clean_simulations_are_returned_untouched(weak, crystal):
    for block in (weak, crystal):
        out, report = check(block)
        assert out is block  # no copy: nothing was repaired
        assert report == BlockReport()
        assert report.summary() == ""


@pytest.mark.parametrize("dose", [1e2, 1e3, 1e5])
@pytest.mark.parametrize("which", ["weak", "crystal"])
def test_shot_noise_is_never_repaired(request, which, dose):
    clean = request.getfixturevalue(which)
    for seed in (0, 1):
        noisy = poisson(clean, dose, seed)
        if dose == 1e2:  # at this dose most dark-field detector pixels are 0 in every pattern: not dead pixels
            assert (noisy[1].max(axis=(0, 1)) == 0).sum() > 10
        out, report = check(noisy)
        assert out is noisy, report
        assert report == BlockReport()


def test_experiment_like_frames_are_returned_untouched(experiment):
    out, report = check(experiment, defocus=(0, 1, 2))
    assert out is experiment
    assert report == BlockReport()
    f = experiment.astype(np.float32)
    out, report = check(f)
    assert out is f and report == BlockReport()
    # one tile with a halo, as the runner reads it, with global indices
    tile = experiment[:, 8:24, 20:40]
    out, report = check(tile, rows=range(8, 24), cols=range(20, 40))
    assert out is tile and report == BlockReport()


# ------------------------------------------------------------------------------------------ dead patterns


@pytest.mark.parametrize("which", ["weak", "crystal"])
@pytest.mark.parametrize("pos", [(5, 7), (0, 3), (0, 0), (11, 11)])
def test_dead_pattern_found_at_its_global_position_and_repaired(request, which, pos):
    clean = request.getfixturevalue(which)
    n = clean.shape[1]
    i, j = pos
    spoiled = clean.copy()
    spoiled[2, i, j] = 0.0
    rows, cols = range(10, 10 + n), range(30, 30 + n)
    out, report = check(spoiled, rows=rows, cols=cols, defocus=(4, 5, 6))
    assert report.dead_patterns == [(6, 10 + i, 30 + j)]
    assert report.hot_pixels == [] and report.spikes == []
    changed = np.zeros(clean.shape, bool)
    changed[2, i, j] = True
    assert_only_changed(out, spoiled, changed)
    dead = np.zeros(clean.shape[1:3], bool)
    dead[i, j] = True
    np.testing.assert_allclose(out[2, i, j], ref_pattern_mean(spoiled[2], dead, i, j), rtol=1e-5, atol=1e-9)
    # close to the pattern that was lost (the dead one is 100 % wrong)
    err = rel_l1(out[2, i, j], clean[2, i, j])
    assert rel_l1(spoiled[2, i, j], clean[2, i, j]) == pytest.approx(1.0)
    assert err < 0.15, err
    assert out[2, i, j].sum() == pytest.approx(clean[2, i, j].sum(), rel=0.02)


def test_dead_pattern_in_noisy_data_and_in_a_wrapped_halo(weak):
    noisy = poisson(weak, 1e3, seed=3)
    clean_noisy = noisy.copy()
    noisy[0, 4, 31] = 0.0
    noisy[0, 20, 2] *= 0.004  # not quite zero: a frame taken with the beam blanked (0.4 % of the counts)
    rows = list(range(28, 32)) + list(range(0, 28))  # a periodic tile whose halo wraps round the scan
    cols = list(range(100, 132))
    out, report = check(noisy, rows=rows, cols=cols)
    assert sorted(report.dead_patterns) == [(0, 0, 131), (0, 16, 102)]
    dead = np.zeros((32, 32), bool)
    dead[4, 31] = dead[20, 2] = True
    for i, j in ((4, 31), (20, 2)):
        np.testing.assert_allclose(out[0, i, j], ref_pattern_mean(noisy[0], dead, i, j), rtol=1e-5, atol=1e-9)
        # the repair averages ~5–8 noisy neighbours: closer to the clean pattern than one noisy pattern is
        assert rel_l1(out[0, i, j], weak[0, i, j]) < rel_l1(clean_noisy[0, i, j], weak[0, i, j])
    changed = np.zeros(noisy.shape, bool)
    changed[0, 4, 31] = changed[0, 20, 2] = True
    assert_only_changed(out, noisy, changed)


def test_dim_but_live_pattern_is_kept(weak):
    b = weak.copy()
    b[1, 9, 9] *= 0.05  # 5 % of the median total: above the 1 % dead threshold
    out, report = check(b)
    assert out is b and report == BlockReport()


def test_up_to_one_percent_dead_patterns_are_repaired_more_are_refused(weak):
    # 32 × 32 = 1024 patterns: 10 dead (≤ 1 %) are repaired, 11 are refused
    positions = [(3 * k, (7 * k) % 32) for k in range(11)]
    assert len(set(positions)) == 11
    b = weak.copy()
    for i, j in positions[:10]:
        b[1, i, j] = 0
    out, report = check(b)
    assert report.dead_patterns == sorted((1, i, j) for i, j in positions[:10])
    dead = np.zeros((32, 32), bool)
    for i, j in positions[:10]:
        dead[i, j] = True
    for i, j in positions[:10]:
        np.testing.assert_allclose(out[1, i, j], ref_pattern_mean(b[1], dead, i, j), rtol=1e-5, atol=1e-9)
    i, j = positions[10]
    b[1, i, j] = 0
    with pytest.raises(BadDataError, match=r"11 of 1024 patterns of defocus index 1 have no signal") as e:
        check(b, source="scan.zarr")
    assert "scan.zarr" in str(e.value) and "Rx=0, Ry=0" in str(e.value)  # the first dead one


def test_dead_pattern_without_live_neighbour_is_refused(weak):
    b = weak.copy()
    b[0, 10:13, 20:23] = 0  # 9 dead (< 1 %), the centre has no live neighbour
    with pytest.raises(BadDataError, match="no live neighbour"):
        check(b)


def test_blocks_without_signal_are_refused(weak):
    with pytest.raises(BadDataError, match="no signal in defocus index 0"):
        check(np.zeros((3, 6, 6, 8, 8), np.float32), rows=range(40, 46), cols=range(0, 6))
    b = weak.copy()
    b[2] = 0  # one scan of the series was never recorded
    with pytest.raises(BadDataError, match=r"no signal in defocus index 2 at scan positions Rx 10–41, Ry 5–36"):
        check(b, rows=range(10, 42), cols=range(5, 37))


# --------------------------------------------------------------------------------------- stuck pixels, spikes


@pytest.mark.parametrize("q", [(16, 17), (3, 28)], ids=["bright-field", "dark-field"])
def test_stuck_hot_pixel_found_and_repaired_in_every_pattern(weak, q):
    qa, qb = q
    b = weak.copy()
    b[1, :, :, qa, qb] = 0.5  # half the beam in one pixel of every pattern
    out, report = check(b, rows=range(50, 82), cols=range(0, 32), defocus=(0, 1, 2))
    assert report.hot_pixels == [(1, qa, qb)]
    assert report.dead_patterns == [] and report.spikes == []
    changed = np.zeros(b.shape, bool)
    changed[1, :, :, qa, qb] = True
    assert_only_changed(out, b, changed)
    bad = np.zeros(b.shape[-2:], bool)
    bad[qa, qb] = True
    ref = np.array([[ref_pixel_mean(b[1, i, j], bad, qa, qb) for j in range(32)] for i in range(32)])
    np.testing.assert_allclose(out[1, :, :, qa, qb], ref, rtol=1e-5, atol=1e-10)
    truth = weak[1, :, :, qa, qb]
    scale = weak[1].mean(axis=(0, 1)).max()  # the bright-field level
    assert np.abs(out[1, :, :, qa, qb] - truth).max() < 0.1 * scale  # stuck value was ≈ 70× the level


def test_hot_pixel_at_the_detector_edge(weak):
    b = weak.copy()
    b[0, :, :, 0, 5] = 1.0
    out, report = check(b)
    assert report.hot_pixels == [(0, 0, 5)]
    v = out[0, :, :, 0, 5]
    nb = weak[0, :, :, 0:2, 4:7].reshape(32, 32, -1)
    assert np.all(v >= nb.min(-1) - 1e-12) and np.all(v <= nb.max(-1) + 1e-12)


def test_two_defoci_with_different_hot_pixels(crystal):
    b = crystal.copy()
    b[0, :, :, 12, 12] = 2.0
    b[2, :, :, 5, 18] = 2.0
    _, report = check(b)
    assert sorted(report.hot_pixels) == [(0, 12, 12), (2, 5, 18)]


@pytest.mark.parametrize("dose", [None, 1e3, 1e5])
def test_dead_detector_pixel_in_the_bright_disk(weak, dose):
    clean = weak if dose is None else poisson(weak, dose, seed=5)
    qa, qb = 15, 16
    b = clean.copy()
    b[2, :, :, qa, qb] = 0
    out, report = check(b)
    assert report.hot_pixels == [(2, qa, qb)]
    assert report.dead_patterns == [] and report.spikes == []
    changed = np.zeros(b.shape, bool)
    changed[2, :, :, qa, qb] = True
    assert_only_changed(out, b, changed)
    bad = np.zeros(b.shape[-2:], bool)
    bad[qa, qb] = True
    ref = np.array([[ref_pixel_mean(b[2, i, j], bad, qa, qb) for j in range(32)] for i in range(32)])
    np.testing.assert_allclose(out[2, :, :, qa, qb], ref, rtol=1e-5, atol=1e-10)
    # against the physical truth (the noise-free intensity there): mean bias well under the noise of one count
    truth = weak[2, :, :, qa, qb]
    assert abs(out[2, :, :, qa, qb].mean() - truth.mean()) < 0.05 * truth.mean()


def test_dead_pixel_in_the_experiment_like_frames(experiment):
    f = experiment.astype(np.float32)
    centre = np.unravel_index(np.argmax(f[1].mean(axis=(0, 1))), f.shape[-2:])
    qa, qb = (int(v) for v in centre)
    b = f.copy()
    b[1, :, :, qa, qb] = 0
    b[0, :, :, 2, 60] = 3000.0  # and a hot one in another scan
    out, report = check(b)
    assert sorted(report.hot_pixels) == [(0, 2, 60), (1, qa, qb)]
    assert abs(out[1, :, :, qa, qb].mean() - f[1, :, :, qa, qb].mean()) < 0.05 * f[1, :, :, qa, qb].mean()


@pytest.mark.parametrize("which", ["weak", "crystal"])
def test_single_spike_found_and_repaired_rest_bitwise_unchanged(request, which):
    clean = request.getfixturevalue(which)
    c = clean.shape[-1] // 2
    d, i, j, qa, qb = 1, 3, 4, c - 1, c + 2  # inside the bright-field disk (its sharp edge cannot be interpolated)
    b = clean.copy()
    b[d, i, j, qa, qb] = 1e6
    out, report = check(b, rows=range(7, 7 + b.shape[1]), cols=range(70, 70 + b.shape[2]), defocus=(0, 1, 2))
    assert report.spikes == [(1, 7 + i, 70 + j, qa, qb)]
    assert report.dead_patterns == [] and report.hot_pixels == []
    changed = np.zeros(b.shape, bool)
    changed[d, i, j, qa, qb] = True
    assert_only_changed(out, clean, changed)
    bad = np.zeros(b.shape[-2:], bool)
    bad[qa, qb] = True
    assert out[d, i, j, qa, qb] == pytest.approx(ref_pixel_mean(b[d, i, j], bad, qa, qb), rel=1e-5)
    scale = clean[d].mean(axis=(0, 1)).max()
    assert abs(out[d, i, j, qa, qb] - clean[d, i, j, qa, qb]) < 0.2 * scale


def test_spikes_in_noisy_and_experiment_like_data(weak, experiment):
    noisy = poisson(weak, 1e3, seed=9)
    ref = noisy.copy()
    noisy[0, 31, 0, 2, 2] = 1e6
    noisy[2, 8, 9, 20, 21] = 500.0
    out, report = check(noisy)
    assert sorted(report.spikes) == [(0, 31, 0, 2, 2), (2, 8, 9, 20, 21)]
    changed = np.zeros(noisy.shape, bool)
    changed[0, 31, 0, 2, 2] = changed[2, 8, 9, 20, 21] = True
    assert_only_changed(out, ref, changed)
    f = experiment.astype(np.float32)
    b = f.copy()
    b[1, 17, 23, 40, 12] = 60000.0  # a cosmic ray: more than the ~50 000 counts of the rest of the frame
    out, report = check(b)
    assert report.spikes == [(1, 17, 23, 40, 12)]
    changed = np.zeros(f.shape, bool)
    changed[1, 17, 23, 40, 12] = True
    assert_only_changed(out, f, changed)
    bad = np.zeros((64, 64), bool)
    bad[40, 12] = True
    assert out[1, 17, 23, 40, 12] == pytest.approx(ref_pixel_mean(b[1, 17, 23], bad, 40, 12), rel=1e-5)


def test_all_spoilings_at_once(crystal):
    b = crystal.copy()
    b[0, 6, 6] = 0  # dead pattern
    b[1, :, :, 8, 9] = 3.0  # hot pixel
    b[2, 2, 3, 14, 15] = 1e6  # spike
    out, report = check(b, rows=range(100, 112), cols=range(200, 212))
    assert report.dead_patterns == [(0, 106, 206)]
    assert report.hot_pixels == [(1, 8, 9)]
    assert report.spikes == [(2, 102, 203, 14, 15)]
    changed = np.zeros(b.shape, bool)
    changed[0, 6, 6] = True
    changed[1, :, :, 8, 9] = True
    changed[2, 2, 3, 14, 15] = True
    assert_only_changed(out, crystal, changed)
    # every repaired value is close to the truth, far closer than the spoiled one
    # (a lost pattern is interpolated from neighbours 0.47 Å away: ~13 % off; detector pixels far closer)
    for sl, f in ((np.s_[0, 6, 6], 0.2), (np.s_[1, :, :, 8, 9], 0.05), (np.s_[2, 2, 3, 14, 15], 0.05)):
        assert np.abs(out[sl] - crystal[sl]).sum() < f * np.abs(b[sl] - crystal[sl]).sum()
    assert "1 dead patterns, 1 stuck detector pixels, 1 spikes" in report.summary()


def test_two_spikes_on_the_same_detector_pixel_are_two_spikes(weak):
    b = weak.copy()
    b[1, 3, 3, 15, 18] = 1e6
    b[1, 20, 25, 15, 18] = 1e6
    out, report = check(b)
    changed = np.zeros(b.shape, bool)
    changed[1, 3, 3, 15, 18] = changed[1, 20, 25, 15, 18] = True
    assert report.hot_pixels == []
    assert report.spikes == [(1, 3, 3, 15, 18), (1, 20, 25, 15, 18)]
    assert_only_changed(out, weak, changed)


def test_spike_next_to_a_dead_pattern(weak):
    b = weak.copy()
    b[1, 3, 3] = 0
    b[1, 3, 4, 15, 18] = 1e6
    out, report = check(b)
    assert report.dead_patterns == [(1, 3, 3)]
    assert report.spikes == [(1, 3, 4, 15, 18)] and report.hot_pixels == []
    changed = np.zeros(b.shape, bool)
    changed[1, 3, 3] = changed[1, 3, 4, 15, 18] = True
    assert_only_changed(out, weak, changed)


def test_dead_pixel_repair_of_integer_counts_does_not_overflow():
    rng = np.random.default_rng(0)
    q = np.arange(32) - 16
    disk = q[:, None] ** 2 + q[None] ** 2 < 64
    clean = rng.poisson(10000.0 * disk + 5, size=(1, 8, 8, 32, 32)).astype(np.uint16)
    b = clean.copy()
    b[0, :, :, 16, 16] = 0
    out, report = check_block(b, rows=range(8), cols=range(8), defocus=[0])
    assert report.hot_pixels == [(0, 16, 16)]
    np.testing.assert_allclose(out[0, :, :, 16, 16], clean[0, :, :, 16, 16], rtol=0.05)


# ------------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("value,kind", [(np.nan, "non-finite"), (np.inf, "non-finite"), (-np.inf, "non-finite"),
                                        (-1e-3, "negative")])
def test_bad_values_are_refused_naming_the_position(weak, value, kind):
    b = weak.copy()
    b[2, 3, 5, 7, 11] = value
    before = b.copy()
    with pytest.raises(BadDataError) as e:
        check_block(b, rows=range(10, 42), cols=range(20, 52), defocus=(0, 1, 2), source="my/scan.zarr")
    msg = str(e.value)
    assert msg.startswith("my/scan.zarr: ") and kind in msg
    assert "(Rx=13, Ry=25) of defocus index 2" in msg
    assert "detector (7, 11)" in msg and "(1 in this block)" in msg
    assert "\n" not in msg
    np.testing.assert_array_equal(b, before)


def test_refusal_names_the_first_bad_value_and_counts_them(weak):
    b = weak.copy()
    b[1, 30, 1, 0, 0] = np.nan
    b[1, 4, 9, 2, 3] = np.nan
    b[2, 0, 0, 5, 5] = np.inf
    with pytest.raises(BadDataError, match=r"\(Rx=4, Ry=9\) of defocus index 1, detector \(2, 3\) \(3 in this block\)"):
        check_block(b, rows=range(32), cols=range(32))


def test_negative_zero_is_accepted(weak):
    b = weak.copy()
    b[0, 0, 0, 0, 0] = -0.0
    out, report = check(b)
    assert out is b and report == BlockReport()


# ------------------------------------------------------------------------------------------------- report


def test_block_report_merge_round_trip_and_summary():
    a = BlockReport(dead_patterns=[(0, 3, 4), (1, 2, 2)], hot_pixels=[(2, 5, 5)], spikes=[(0, 1, 1, 3, 3)])
    b = BlockReport(dead_patterns=[(1, 2, 2), (0, 0, 9)], hot_pixels=[(2, 5, 5), (0, 1, 1)], spikes=[])
    m = a.merge(b)
    assert m.dead_patterns == [(0, 0, 9), (0, 3, 4), (1, 2, 2)]  # union, sorted, overlapping halos once
    assert m.hot_pixels == [(0, 1, 1), (2, 5, 5)]
    assert m.spikes == [(0, 1, 1, 3, 3)]
    assert a.merge(BlockReport()) == BlockReport(sorted(a.dead_patterns), a.hot_pixels, a.spikes)
    # numpy integers (as check_block's argwhere yields) serialise and come back as the same tuples
    c = BlockReport(dead_patterns=[(np.int64(1), 2, np.int32(3))], hot_pixels=[], spikes=[(0, 1, 2, np.int64(3), 4)])
    for r in (m, c, BlockReport()):
        back = BlockReport.from_full(json.loads(json.dumps(r.as_full())))
        assert back == BlockReport(*(list(map(tuple, v)) for v in (r.dead_patterns, r.hot_pixels, r.spikes)))
        assert all(isinstance(x, tuple) for x in back.dead_patterns + back.hot_pixels + back.spikes)
    assert BlockReport.from_full({}) == BlockReport()
    assert BlockReport().summary() == ""
    assert m.summary().startswith("repaired 3 dead patterns, 2 stuck detector pixels, 1 spikes")
    assert BlockReport(spikes=[(0, 1, 1, 3, 3)]).summary().startswith("repaired 1 spikes (")
    big = BlockReport(dead_patterns=[(0, i, 0) for i in range(30)])
    attrs = json.loads(json.dumps(big.as_attrs()))
    assert attrs["dead_patterns"]["count"] == 30 and len(attrs["dead_patterns"]["first"]) == 20
    assert attrs["hot_pixels"] == {"count": 0, "first": []}


def test_report_of_tiles_merges_to_the_report_of_the_whole(crystal):
    b = crystal.copy()
    b[1, 5, 6] = 0
    b[0, 9, 2, 3, 20] = 1e6
    _, whole = check(b)
    _, left = check(b[:, :8], rows=range(0, 8))
    _, right = check(b[:, 4:], rows=range(4, 12))  # overlapping halos see the dead pattern twice
    merged = left.merge(right)
    assert merged == whole.merge(BlockReport())
    assert merged.dead_patterns == [(1, 5, 6)]


# -------------------------------------------------------------------------------------------------- phase


def test_check_phase():
    phase = np.zeros((16, 16))
    valid = np.zeros((16, 16), bool)
    valid[4:12, 4:12] = True
    check_phase(phase)
    check_phase(phase, valid=valid)
    p = phase.copy()
    p[0, 1] = np.nan  # outside the lit region: fine there
    p[15, 15] = np.inf
    check_phase(p, valid=valid)
    with pytest.raises(BadDataError, match=r"2 non-finite pixels \(first at object pixel \(0, 1\)\)"):
        check_phase(p)
    p[5, 7] = np.nan
    with pytest.raises(BadDataError, match=r"the tie phase of x has 1 non-finite pixels \(first at object pixel "
                                           r"\(5, 7\)\)"):
        check_phase(p, valid=valid, what="the tie phase of x")
    q = phase.copy()
    q[11, 4] = -np.inf
    with pytest.raises(BadDataError, match=r"\(11, 4\)"):
        check_phase(q, valid=valid)


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def gaas_store(tmp_path_factory):
    from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store

    path = tmp_path_factory.mktemp("e2e") / "gaas.zarr"
    return simulate_to_store(SimulationParameters(material="GaAs", lateral_cells=1, scan_pixels=16,
                                                  detector_pixels=24, gpts=32), str(path), progress=False)


def _spoiled_copy(src, dst, spoil):
    import zarr

    shutil.copytree(src, dst)
    arr = zarr.open_array(os.path.join(dst, "intensity"), mode="r+")
    spoil(arr)
    return str(dst)


def _mse(path, **kw):
    from flowtie_dask.evaluate import evaluate_result
    from flowtie_dask.methods import get_method
    from flowtie_dask.runner import reconstruct

    result = reconstruct(path, get_method("tie"), progress=False, **kw)
    return evaluate_result(result, path)["mse"], result


def _set(index, value):
    def spoil(arr):
        arr[index] = value
    return spoil


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["spike", "dead_pattern", "hot_pixel"])
def test_reconstruction_of_a_spoiled_store_matches_the_clean_one(gaas_store, tmp_path, monkeypatch, kind):

    spoil, key = {"spike": (_set((1, 5, 7, 10, 11), 1e6), "spikes"),
                  "dead_pattern": (_set((0, 9, 3), 0.0), "dead_patterns"),
                  "hot_pixel": (_set((2, slice(None), slice(None), 12, 11), 5.0), "hot_pixels")}[kind]
    expected = {"spikes": [[1, 5, 7, 10, 11]], "dead_patterns": [[0, 9, 3]], "hot_pixels": [[2, 12, 11]]}[key]
    clean_mse, clean = _mse(gaas_store)
    assert clean.attrs["data_repairs"][key]["count"] == 0 and clean.attrs["data_repairs_summary"] == ""
    path = _spoiled_copy(gaas_store, tmp_path / "spoiled.zarr", spoil)
    mse, result = _mse(path)
    assert mse == pytest.approx(clean_mse, rel=0.2)
    assert mse < 0.5 * result_truth_variance(result, path)
    repairs = result.attrs["data_repairs"]
    assert repairs[key]["count"] == 1 and repairs[key]["first"] == expected
    assert sum(v["count"] for v in repairs.values()) == 1
    assert result.attrs["data_repairs_summary"].startswith("repaired 1 ")
    # tiles whose halos overlap each see the spoiling: still counted once
    mse_tiled, tiled = _mse(path, tile_size=8, halo=4)
    assert tiled.attrs["n_tiles"] == 4
    assert tiled.attrs["data_repairs"][key] == repairs[key]
    if kind == "spike":
        # the check is what saves the reconstruction: without it the same store reconstructs far worse (a dead
        # pattern or a pixel stuck in every pattern costs TIE little, so there only the repair is checked)
        import flowtie_dask.quality as quality

        monkeypatch.setattr(quality, "check_block", lambda block, **kw: (block, BlockReport()))
        unchecked, _ = _mse(path)
        assert not unchecked < 10 * clean_mse  # (NaN counts as worse)


def result_truth_variance(result, path):
    from flowtie_dask.evaluate import evaluate_result

    return evaluate_result(result, path)["truth_variance"]


@pytest.mark.parametrize("electrons", [14, 30, 100])
def test_low_dose_single_counts_on_a_large_detector_are_signal(electrons):
    """Sparse counts (≪ 1 per bright-field pixel, as event detectors record beam-sensitive specimens) are
    isolated ones among zeros: none of them may be taken for a spike."""
    rng = np.random.default_rng(electrons)
    q = np.arange(64) - 32
    disk = ((q[:, None] ** 2 + q[None] ** 2) <= 20 ** 2).astype(np.float64)
    rate = electrons * disk / disk.sum()
    block = rng.poisson(np.broadcast_to(rate, (3, 24, 24, 64, 64))).astype(np.float32)
    before = block.copy()
    out, report = check_block(block, rows=range(24), cols=range(24))
    assert report.spikes == [] and report.hot_pixels == [] and report.dead_patterns == []
    np.testing.assert_array_equal(out, before)

"""The three scans on one grid: the spline shift against scipy, the aligned read against the whole-scan read
for several tilings, and a drifted series reconstructed with and without its recorded drift."""

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from flowtie_dask.geometry import ReconstructionGeometry
from flowtie_dask.runner.align import common_area, read_aligned, spline_shift
from flowtie_dask.runner.tiles import plan_tiles
from flowtie_dask.store import ScanMetadata, open_scan_store, write_scan_store


@pytest.mark.parametrize("shift", [(0.3, -0.7), (1.6, 0.25), (-2.4, 3.1)])
def test_spline_shift_equals_scipys_cubic_shift_away_from_the_edges(shift):
    rng = np.random.default_rng(0)
    a = ndimage.gaussian_filter(rng.normal(size=(40, 36)), 1.5)
    got = spline_shift(a, shift)
    want = ndimage.shift(a, shift, order=3, mode="mirror")
    m = 6
    np.testing.assert_allclose(got[m:-m, m:-m], want[m:-m, m:-m], atol=1e-12)
    # over the scan axes only: every detector pixel of a 4D block is the 2D shift of its own image
    block = rng.normal(size=(20, 18, 3, 2)).astype(np.float32)
    out = spline_shift(block, shift, axes=(0, 1))
    assert out.dtype == np.float32 and out.shape == block.shape
    for q in [(0, 0), (2, 1)]:
        ref = ndimage.shift(block[:, :, q[0], q[1]].astype(np.float64), shift, order=3, mode="mirror")
        np.testing.assert_allclose(out[m:-m, m:-m, q[0], q[1]], ref[m:-m, m:-m], atol=1e-5)


def test_common_area_is_where_every_scan_has_data():
    drift = np.array([[0.4, -1.2], [0.0, 0.0], [-2.5, 0.6]])
    keep = common_area((10, 8), drift, periodic=False)
    # rows: i − 0.4 ≥ 0 → i ≥ 1; i + 2.5 ≤ 9 → i ≤ 6. cols: j + 1.2 ≤ 7 → j ≤ 5; j − 0.6 ≥ 0 → j ≥ 1
    want = np.zeros((10, 8), bool)
    want[1:7, 1:6] = True
    np.testing.assert_array_equal(keep, want)
    assert common_area((10, 8), drift, periodic=True).all()


def _smooth_store(path, drift_A, *, periodic=False, scan=(24, 20), step=0.2):
    """Patterns whose value at scan position (i, j) is a smooth function of where the probe is on the specimen:
    scan s sees focus-scan position (i, j) + drift[s]/step."""
    q = 8
    meta = ScanMetadata(energy=300e3, semiangle=20.0, defocus=(-20.0, 0.0, 20.0), scan_step=(step, step),
                        detector_sampling=(0.1, 0.1), detector_center=(q // 2, q // 2), periodic=periodic,
                        scan_drift=tuple(tuple(d) for d in drift_A))
    i, j = np.meshgrid(np.arange(scan[0]), np.arange(scan[1]), indexing="ij")
    qq = np.arange(q * q).reshape(q, q) / (q * q)
    data = np.empty((3,) + scan + (q, q), np.float32)
    for s, d in enumerate(np.asarray(drift_A) / step):
        x, y = i + d[0], j + d[1]
        if periodic:
            f = 2 + np.cos(2 * np.pi * x / scan[0]) * np.sin(4 * np.pi * y / scan[1])
        else:
            f = 2 + np.cos(0.35 * x) * np.sin(0.3 * y) + 0.01 * x
        data[s] = (f[:, :, None, None] * (1 + qq)).astype(np.float32)
    with write_scan_store(str(path), meta, scan_shape=scan, detector_shape=(q, q)) as g:
        g["intensity"][:] = data
    st = open_scan_store(str(path))
    return ReconstructionGeometry.from_metadata(st.metadata, scan_shape=st.scan_shape, detector_shape=st.detector_shape), data


@pytest.mark.parametrize("periodic", [False, True])
def test_aligned_reads_put_every_scan_on_the_focus_grid_and_tiles_agree_with_the_whole_scan(tmp_path, periodic):
    drift = [(0.09, -0.23), (0.0, 0.0), (-0.31, 0.05)]  # Å: 0.45, −1.15, −1.55, 0.25 scan steps
    geo, data = _smooth_store(tmp_path / "s.zarr", drift, periodic=periodic)
    assert geo.scan_drift == tuple(tuple(d) for d in drift)
    rx, ry = geo.scan_shape
    whole, _ = read_aligned(str(tmp_path / "s.zarr"), geo, list(range(rx)), list(range(ry)))
    keep = common_area(geo.scan_shape, np.asarray(drift) / 0.2, periodic=periodic)
    inner = keep.copy()
    if not periodic:  # the spline needs two positions of support inside the scan
        inner[:3], inner[-3:], inner[:, :3], inner[:, -3:] = False, False, False, False
    for s in (0, 2):  # resampled onto the focus grid: equal to the focus scan
        err = np.abs(whole[s] - data[1])[inner].max() / np.abs(data[1]).max()
        assert err < 3e-3, (s, err)
    # unaligned, the scans differ far more
    assert np.abs(data[0] - data[1])[inner].max() / np.abs(data[1]).max() > 0.03
    np.testing.assert_array_equal(whole[1], data[1])  # the focus scan is read as stored
    for tile in [(8, 8), (7, 11)]:
        for t in plan_tiles(geo.scan_shape, tile, 4, periodic=periodic):
            block, _ = read_aligned(str(tmp_path / "s.zarr"), geo, t.rows, t.cols)
            ix, iy = t.interior
            np.testing.assert_allclose(block[:, ix, iy], whole[:, t.xs[0]:t.xs[-1] + 1, t.ys[0]:t.ys[-1] + 1],
                                       rtol=2e-6, atol=0, err_msg=f"{tile} {t.xs} {t.ys}")


def test_a_store_without_drift_is_read_exactly_as_before(tmp_path):
    geo, data = _smooth_store(tmp_path / "s.zarr", [(0.0, 0.0)] * 3)
    block, _ = read_aligned(str(tmp_path / "s.zarr"), geo, list(range(3, 9)), list(range(2, 5)))
    np.testing.assert_array_equal(block, data[:, 3:9, 2:5])


@pytest.mark.slow
def test_a_drifted_series_reconstructs_like_the_clean_one_only_with_its_drift_recorded(tmp_path):
    """TIE on a periodic GaAs series at the paper's sampling whose −Δz and +Δz scans are shifted by sub-pixel
    drifts (a Fourier shift over the scan axes, exact for the periodic scan, independent of the spline): with the
    drift recorded it is close to the clean series; recorded as zero it is far worse."""
    from flowtie_dask.evaluate import evaluate_result
    from flowtie_dask.methods import get_method
    from flowtie_dask.runner import reconstruct
    from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store
    from flowtie_dask.store import write_truth

    clean = str(tmp_path / "clean.zarr")
    simulate_to_store(SimulationParameters(material="GaAs", lateral_cells=1, scan_pixels=32, detector_pixels=32),
                      clean, progress=False)
    st = open_scan_store(clean)
    step = np.asarray(st.metadata.scan_step)
    drift = np.array([[0.83, -0.61], [0.0, 0.0], [-0.52, 0.94]])  # Å: 3–5 scan steps, sub-pixel parts
    data = np.asarray(st.intensity[:])
    kx = np.fft.fftfreq(data.shape[1])[:, None]
    ky = np.fft.fftfreq(data.shape[2])[None, :]
    spoiled = data.copy()
    for s in (0, 2):  # scan s at (i, j) sees focus position (i, j) + d: I_s(i) = I_s,clean(i + d)
        d = drift[s] / step
        ramp = np.exp(2j * np.pi * (kx * d[0] + ky * d[1]))[:, :, None, None]
        spoiled[s] = np.real(np.fft.ifft2(np.fft.fft2(data[s], axes=(0, 1)) * ramp, axes=(0, 1)))
    results = {}
    for name, meta in [("with", st.metadata.replace(scan_drift=tuple(map(tuple, drift)))),
                       ("without", st.metadata)]:
        path = str(tmp_path / f"{name}.zarr")
        with write_scan_store(path, meta, scan_shape=st.scan_shape, detector_shape=st.detector_shape) as g:
            g["intensity"][:] = spoiled.astype(np.float32)
            pattrs = st.truth["projected_phase"].attrs
            write_truth(g, np.asarray(st.truth["projected_phase"]), pixel_size=tuple(pattrs["pixel_size_A"]),
                        origin=tuple(pattrs["origin_A"]), attrs=dict(st.truth.attrs))
        results[name] = evaluate_result(reconstruct(path, get_method("tie"), progress=False), path)["mse"]
    ref = evaluate_result(reconstruct(clean, get_method("tie"), progress=False), clean)["mse"]
    # measured: clean 0.002544, drift recorded 0.002544, drift ignored 0.00333 rad²
    assert results["with"] < 1.02 * ref, (results, ref)
    assert results["without"] > 1.2 * results["with"], (results, ref)


def test_a_store_without_calibration_says_what_was_assumed(tmp_path, capsys):
    """A microscope's store without calibrations: a warning naming calibrate; with a calibration record: none."""
    from flowtie_dask.cli.main import main

    _smooth_store(tmp_path / "raw.zarr", [(0.0, 0.0)] * 3)
    assert main(["reconstruct", str(tmp_path / "raw.zarr"), "--out", str(tmp_path / "r.zarr"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("warning:")]
    assert len(line) == 1 and "the three scans are taken as registered" in line[0]
    assert f"flowtie-dask calibrate {tmp_path / 'raw.zarr'}" in line[0]
    st = open_scan_store(str(tmp_path / "raw.zarr"))
    meta = st.metadata.replace(calibration={"scan_drift": {"value": [[0, 0]] * 3, "method": "test",
                                                           "source": "estimated from data"}})
    with write_scan_store(str(tmp_path / "cal.zarr"), meta, scan_shape=st.scan_shape,
                          detector_shape=st.detector_shape) as g:
        g["intensity"][:] = np.asarray(st.intensity[:])
    assert main(["reconstruct", str(tmp_path / "cal.zarr"), "--out", str(tmp_path / "c.zarr"), "--no-progress"]) == 0
    assert "calibration" not in capsys.readouterr().err


def test_scan_drift_is_checked_and_kept_by_the_store_metadata():
    from flowtie_dask.store import ScanStoreError

    kw = dict(energy=300e3, semiangle=20.0, defocus=(-20.0, 0.0, 20.0), scan_step=0.2, detector_sampling=0.1,
              detector_center=(4, 4))
    m = ScanMetadata(**kw, scan_drift=((0.1, -0.2), (0, 0), (0.3, 0.0)))
    assert ScanMetadata.from_attrs(m.to_attrs()).scan_drift == ((0.1, -0.2), (0.0, 0.0), (0.3, 0.0))
    assert ScanMetadata.from_attrs({k: v for k, v in m.to_attrs().items() if k != "scan_drift_A"}).scan_drift == \
        ((0.0, 0.0),) * 3  # stores written before the field: no drift
    for bad in [((0.1, 0.2),), ((0, 0), (0, 0), (float("nan"), 0))]:
        with pytest.raises(ScanStoreError, match="scan_drift must be three"):
            ScanMetadata(**kw, scan_drift=bad)


def test_drifted_scans_are_reconstructed_on_their_common_window(tmp_path):
    """Non-periodic drifted scans: the runner works on the largest window every scan covers, and the result's
    origin and field of view say where that window lies in the store's scan."""
    from flowtie_dask.methods import get_method
    from flowtie_dask.runner import reconstruct
    from flowtie_dask.runner.align import common_window

    drift = [(0.25, -0.45), (0.0, 0.0), (-0.5, 0.1)]  # steps: (1.25, −2.25), (−2.5, 0.5)
    geo, _ = _smooth_store(tmp_path / "s.zarr", drift)
    (r0, r1), (c0, c1) = common_window(geo)
    # rows (24): i − 1.25 ≥ 0 and i + 2.5 ≤ 23 → 2..20; cols (20): j + 2.25 ≤ 19 and j − 0.5 ≥ 0 → 1..16
    assert (r0, r1, c0, c1) == (2, 21, 1, 17)
    whole = reconstruct(str(tmp_path / "s.zarr"), get_method("icom"), progress=False)
    assert whole.attrs["scan_window"] == [[2, 21], [1, 17]]
    (wr0, wr1), (wc0, wc1) = whole.attrs["scan_window"]
    assert whole.phase.shape == (wr1 - wr0, wc1 - wc0)
    assert whole.origin == pytest.approx((wr0 * 0.2, wc0 * 0.2))
    tie = reconstruct(str(tmp_path / "s.zarr"), get_method("tie"), progress=False)
    plain, _ = _smooth_store(tmp_path / "p.zarr", [(0.0, 0.0)] * 3)
    ref = reconstruct(str(tmp_path / "p.zarr"), get_method("tie"), progress=False)
    assert tie.phase.shape[0] < ref.phase.shape[0] and tie.attrs["scan_window"] == whole.attrs["scan_window"]
    assert tie.origin[0] == pytest.approx(ref.origin[0] + wr0 * 0.2)

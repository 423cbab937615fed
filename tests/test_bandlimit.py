"""The scan band limit: the filter against a slow reference, against the physics (no pattern pixel holds a scan
frequency above 2α/λ), tiled against whole-scan, and in the runner (on for noisy scans, and it lowers the error)."""

import dataclasses
import math

import numpy as np
import pytest

from flowtie_dask.bandlimit import band_limit, band_limit_response, band_margin, scan_band_limit
from flowtie_dask.runner.align import read_aligned
from flowtie_dask.store import open_scan_store

from .conftest import weak_object_series


def _slow_band_limit(block, step, cutoff):
    """Half-sample even extension of each scan image to (2Rx, 2Ry), a plain FFT low-pass on the radial frequency
    of that grid (the same response), cropped back: what the DCT-II computes, written out."""
    d, rx, ry, qx, qy = block.shape
    ext = np.concatenate([block, block[:, ::-1]], axis=1)
    ext = np.concatenate([ext, ext[:, :, ::-1]], axis=2)
    fx = np.abs(np.fft.fftfreq(2 * rx, step[0]))
    fy = np.abs(np.fft.fftfreq(2 * ry, step[1]))
    # the response of index (i, j) of the DCT grid is that of frequency (i/(2Rx·sx), j/(2Ry·sy)): fftfreq's |f|
    resp = band_limit_response((rx, ry), step, cutoff)
    h = np.empty((2 * rx, 2 * ry))
    for a in range(2 * rx):
        for b in range(2 * ry):
            i = int(round(fx[a] * 2 * rx * step[0]))
            j = int(round(fy[b] * 2 * ry * step[1]))
            h[a, b] = resp[min(i, rx - 1), min(j, ry - 1)] if i < rx and j < ry else 0.0
    out = np.real(np.fft.ifft2(np.fft.fft2(ext, axes=(1, 2)) * h[None, :, :, None, None], axes=(1, 2)))
    return out[:, :rx, :ry]


def test_the_filter_equals_the_even_extension_fft_low_pass(rng):
    block = rng.random((2, 12, 10, 3, 2))
    step, cutoff = (0.2, 0.25), 2.0
    fast = band_limit(block, step=step, cutoff=cutoff, rows_per_pass=2)
    slow = _slow_band_limit(block, step, cutoff)
    # the Nyquist bins (i = Rx of the extended grid) are where the two differ: the DCT has none; weight 0 here
    assert np.abs(fast - slow).max() < 1e-10


def test_white_noise_keeps_the_share_of_the_disk_and_a_band_limited_scan_is_kept():
    rng = np.random.default_rng(5)
    step, cutoff = (0.17, 0.17), 2.0
    noise = rng.standard_normal((1, 64, 64, 4, 4))
    kept = band_limit(noise, step=step, cutoff=cutoff).var() / noise.var()
    h = band_limit_response((64, 64), step, cutoff)
    assert kept == pytest.approx(float((h ** 2).mean()), rel=0.05)
    nyquist = 1 / (2 * step[0])
    disk = math.pi * cutoff ** 2 / 4 / nyquist ** 2  # the disk's share of the frequency quadrant [0, Nyquist]²
    assert 0.8 * disk < kept < 1.1 * disk
    # a signal below (1 − width)·cutoff passes unchanged (away from the even extension's seams: a cosine of the DCT grid)
    i = np.arange(64)
    f = 0.6 * cutoff * 2 * 64 * step[0]  # DCT index of 0.6·cutoff
    k = int(round(f))
    wave = np.cos(math.pi * k * (i + 0.5) / 64)[:, None] * np.ones(64)[None, :]
    sig = np.broadcast_to(wave[None, :, :, None, None], (1, 64, 64, 2, 2)).astype(np.float64)
    assert np.abs(band_limit(sig, step=step, cutoff=cutoff) - sig).max() < 1e-12


def test_no_pattern_pixel_of_a_simulated_scan_holds_frequencies_above_the_limit():
    """The physics: I(q; r̂) over r̂ is limited to 2α/λ for every pixel q (dark field included)."""
    intensity, _, _, geometry = weak_object_series(n=48, step=0.2, max_phase=0.8)
    cutoff = scan_band_limit(geometry)
    spec = np.abs(np.fft.fft2(intensity[1].astype(np.float64), axes=(0, 1))) ** 2  # periodic scan: exact FFT
    fx = np.fft.fftfreq(intensity.shape[1], geometry.scan_step[0])
    fy = np.fft.fftfreq(intensity.shape[2], geometry.scan_step[1])
    f = np.hypot(fx[:, None], fy[None, :])
    spec[0, 0] = 0.0
    above = spec[f > 1.02 * cutoff].sum() / spec.sum()
    below = spec[(f > 0.5 * cutoff) & (f <= cutoff)].sum() / spec.sum()
    assert above < 1e-6 < below


@pytest.fixture(scope="module")
def noisy_store(tmp_path_factory):
    from flowtie_dask.cli.main import main

    path = tmp_path_factory.mktemp("noisy") / "n.zarr"
    # Table 1's sampling (step 0.177 Å: the scan's Nyquist frequency 2.8/Å against 2α/λ = 2.0/Å), 10⁴ e⁻/pattern
    assert main(["simulate", "GaAs", "--out", str(path), "--lateral-cells", "1", "--scan-pixels", "32",
                 "--detector-pixels", "32", "--no-progress", "--workers", "0", "--dose", "3.2e5"]) == 0
    return path


@pytest.mark.parametrize("periodic", [True, False])
def test_a_tile_read_with_its_margin_equals_the_whole_scan_filtered(noisy_store, periodic):
    geo = dataclasses.replace(_geometry(noisy_store), periodic=periodic)
    band = dataclasses.replace(geo, scan_band_limit=scan_band_limit(geo))
    rx, ry = geo.scan_shape
    whole, _ = read_aligned(str(noisy_store), band, list(range(rx)), list(range(ry)))
    raw, _ = read_aligned(str(noisy_store), geo, list(range(rx)), list(range(ry)))
    rows, cols = list(range(8, 22)), list(range(14, 30))
    tile, _ = read_aligned(str(noisy_store), band, rows, cols)
    inner = whole[:, 8:22, 14:30]
    removed = float(np.std(raw - whole))
    assert removed > 0
    d = tile - inner  # measured with a margin of 16: 0.04–0.12 % rms, 0.8–2 % at worst of the noise removed
    assert np.sqrt((d ** 2).mean()) < 0.005 * removed and np.abs(d).max() < 0.05 * removed, (d, removed)
    assert band_margin(geo.scan_step, scan_band_limit(geo)) == (16, 16)  # 0.177 Å step, 2α/λ = 2.03/Å
    # the reach scales with 1/(cutoff·step): a finer step or a smaller aperture reads further
    assert band_margin((0.1, 0.2), 1.0) == (58, 29)


def test_the_runner_filters_noisy_scans_for_flowtie_and_it_lowers_the_error(noisy_store, gaas16):
    from flowtie_dask.evaluate import evaluate_result
    from flowtie_dask.methods import get_method
    from flowtie_dask.runner import reconstruct

    method = get_method("flowtie")
    auto = reconstruct(str(noisy_store), method, progress=False)
    off = reconstruct(str(noisy_store), method, progress=False, band_limit="off")
    assert auto.attrs["scan_band_limit_invA"] == pytest.approx(scan_band_limit(_geometry(noisy_store)))
    assert off.attrs["scan_band_limit_invA"] == 0.0
    e_auto = evaluate_result(auto, str(noisy_store))["mse"]
    e_off = evaluate_result(off, str(noisy_store))["mse"]
    assert e_auto < 0.97 * e_off, (e_auto, e_off)
    # a noise-free simulation is not filtered by default; TIE is not filtered by default
    assert reconstruct(str(gaas16), method, progress=False).attrs["scan_band_limit_invA"] == 0.0
    assert reconstruct(str(noisy_store), get_method("tie"), progress=False).attrs["scan_band_limit_invA"] == 0.0
    with pytest.raises(ValueError, match="band_limit"):
        reconstruct(str(noisy_store), method, progress=False, band_limit="yes")


def _geometry(path):
    from flowtie_dask.geometry import ReconstructionGeometry

    st = open_scan_store(path)
    return ReconstructionGeometry.from_metadata(st.metadata, scan_shape=st.scan_shape, detector_shape=st.detector_shape)


def test_the_command_line_turns_the_band_limit_on_and_off_and_records_it(noisy_store, tmp_path):
    from flowtie_dask.cli.main import main
    from flowtie_dask.results import open_result

    seen = {}
    for mode in ("on", "off"):
        out = tmp_path / f"{mode}.zarr"
        assert main(["reconstruct", str(noisy_store), "--out", str(out), "--method", "tie", "--band-limit", mode,
                     "--no-progress", "--workers", "0"]) == 0
        seen[mode] = open_result(str(out))
    assert seen["on"].attrs["scan_band_limit_invA"] == pytest.approx(scan_band_limit(_geometry(noisy_store)))
    assert seen["off"].attrs["scan_band_limit_invA"] == 0.0
    assert not np.allclose(seen["on"].phase, seen["off"].phase)


def test_one_period_of_a_scan_is_filtered_by_its_fft(rng):
    block = rng.random((1, 16, 12, 2, 3))
    step, cutoff = (0.2, 0.2), 2.0
    got = band_limit(block, step=step, cutoff=cutoff, periodic=True)
    f = np.hypot(np.fft.fftfreq(16, 0.2)[:, None], np.fft.fftfreq(12, 0.2)[None, :])
    w = 0.175  # DEFAULT_WIDTH, written out: 1 below (1 − w)·cutoff, ½ at cutoff, 0 above (1 + w)·cutoff
    h = np.where(f <= (1 - w) * cutoff, 1.0, np.where(f >= (1 + w) * cutoff, 0.0,
                 np.cos(0.5 * np.pi * (f - (1 - w) * cutoff) / (2 * w * cutoff)) ** 2))
    expect = np.real(np.fft.ifft2(np.fft.fft2(block, axes=(1, 2)) * h[None, :, :, None, None], axes=(1, 2)))
    assert np.abs(got - expect).max() < 1e-12

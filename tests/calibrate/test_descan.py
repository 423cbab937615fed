"""Descan: the beam's drift over the scan, estimated by ``calibrate`` and undone by ``reconstruct`` pattern by
pattern (the kernel against a slow reference and against whole-pixel shifts; the whole chain against the truth)."""

import numpy as np
import pytest
import zarr

import flowtie_dask.geometry as geometry_module
from flowtie_dask.cli.main import main
from flowtie_dask.evaluate import evaluate_result
from flowtie_dask.methods import get_method
from flowtie_dask.runner import reconstruct
from flowtie_dask.runner.align import _keys, pattern_shift
from flowtie_dask.simulate.series import SimulationParameters, plan_simulation
from flowtie_dask.store import open_scan_store, write_truth

from .synthetic import spoiled_store


def _slow_shift(p, s):
    """out[x, y] = Σ_ab K(x − s0 − a) K(y − s1 − b) p[clip(a), clip(b)], the Keys interpolation written out."""
    n0, n1 = p.shape
    out = np.zeros_like(p, dtype=np.float64)
    for x in range(n0):
        for y in range(n1):
            u, v = x - s[0], y - s[1]
            for a in range(int(np.floor(u)) - 1, int(np.floor(u)) + 3):
                for b in range(int(np.floor(v)) - 1, int(np.floor(v)) + 3):
                    out[x, y] += _keys(u - a) * _keys(v - b) * p[min(max(a, 0), n0 - 1), min(max(b, 0), n1 - 1)]
    return out


def test_pattern_shift_equals_the_slow_interpolation_and_whole_pixels_exactly():
    rng = np.random.default_rng(3)
    p = rng.random((3, 12, 10)).astype(np.float32)
    shifts = np.array([[0.37, -1.62], [2.0, 0.0], [-0.5, 3.25]])
    out = pattern_shift(p, shifts)
    for n in range(3):
        np.testing.assert_allclose(out[n], np.maximum(_slow_shift(p[n], shifts[n]), 0), atol=2e-6)
    whole = np.pad(p[1], ((2, 0), (0, 0)), mode="edge")[:12]  # out[x] = p[x − 2], edge continued
    np.testing.assert_allclose(out[1], whole, atol=1e-6)


@pytest.mark.slow
def test_calibrated_descan_is_undone(tmp_path, capsys, monkeypatch):
    """A beam that moves 1.3 px over the scan: calibrate finds the slopes; TIE with the descan undone is close to
    the clean series, without it clearly worse."""
    descan = ((0.03, -0.01), (0.015, 0.035))  # px per scan step (≈ 0.7 + 0.8 px from the middle to a corner)
    spoiled, clean = str(tmp_path / "spoiled.zarr"), str(tmp_path / "clean.zarr")
    spoiled_store(spoiled, scan=32, descan=descan)
    spoiled_store(clean, scan=32)
    plan = plan_simulation(SimulationParameters(material="GaAs", lateral_cells=2, thickness_cells=1,
                                                detector_pixels=64, scan_pixels=32))
    for path in (spoiled, clean):
        write_truth(zarr.open_group(path, mode="r+"), plan.projected_phase, pixel_size=plan.sampling, origin=(0.0, 0.0))
    assert main(["calibrate", spoiled, "--only", "centre"]) == 0
    out = capsys.readouterr().out
    assert "reconstruct moves the patterns back by it" in out
    entry = open_scan_store(spoiled).metadata.calibration["descan"]
    assert entry["applied"] is True
    np.testing.assert_allclose(entry["value"]["slope_px_per_step"], descan, atol=0.004)
    mse = {name: evaluate_result(reconstruct(p, get_method("tie"), progress=False), p)["mse"]
           for name, p in (("clean", clean), ("corrected", spoiled))}
    monkeypatch.setattr(geometry_module, "DESCAN_MIN_PX", 1e9)  # the same store, descan left in
    mse["left in"] = evaluate_result(reconstruct(spoiled, get_method("tie"), progress=False), spoiled)["mse"]
    # measured (rad²): clean 0.00216, corrected 0.00234, left in 0.00515
    assert mse["corrected"] < 1.15 * mse["clean"], mse
    assert mse["left in"] > 1.5 * mse["corrected"], mse

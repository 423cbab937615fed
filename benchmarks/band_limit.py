"""Phase MSE with and without the scan band limit (flowtie_dask.bandlimit) on the Table 1 settings at finite dose.

Run:  python benchmarks/band_limit.py [--out DIR] [--electrons 1e5 1e4] [--methods flowtie tie icom]

For each setting (paper §3: 300 kV, 20 mrad, Δf = ±20 Å, 64×64 scan, step = pixel = 0.18 Å, 64×64 detector) and
each dose (Poisson noise at N electrons per pattern; 0 = noise-free), every method runs with ``band_limit="off"``
and ``"on"``; the line gives both MSEs (rad²) and the change. Stores are simulated once into --out.
"""

import argparse
import os
import time

from flowtie_dask.evaluate import evaluate_result
from flowtie_dask.methods import get_method
from flowtie_dask.runner import reconstruct
from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store
from flowtie_dask.store import open_scan_store

SETTINGS = [("GaAs", 2, 1), ("GaAs", 2, 5), ("SrTiO3", 3, 1), ("SrTiO3", 3, 5)]


def store_at(out: str, material: str, lateral: int, cells: int, electrons: float) -> str:
    """The setting's store at ``electrons`` per pattern (0: noise-free), simulated when missing."""
    clean = os.path.join(out, f"{material}_{cells}cells_clean.zarr")
    params = dict(material=material, lateral_cells=lateral, thickness_cells=cells, scan_pixels=64, detector_pixels=64)
    if not os.path.exists(clean):
        simulate_to_store(SimulationParameters(**params), clean, progress=False)
    if not electrons:
        return clean
    path = os.path.join(out, f"{material}_{cells}cells_e{electrons:g}.zarr")
    if not os.path.exists(path):
        sx, sy = open_scan_store(clean).metadata.scan_step
        simulate_to_store(SimulationParameters(**params, dose=electrons / (sx * sy)), path, progress=False)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="band_limit_data")
    parser.add_argument("--electrons", type=float, nargs="+", default=[1e5, 1e4])
    parser.add_argument("--methods", nargs="+", default=["flowtie", "tie", "icom"])
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    print(f"{'setting':14s} {'e-/pattern':>10s} {'method':8s} {'off':>9s} {'on':>9s} {'change':>7s} {'s on':>6s}")
    for electrons in args.electrons:
        for material, lateral, cells in SETTINGS:
            path = store_at(args.out, material, lateral, cells, electrons)
            for name in args.methods:
                mse = {}
                for mode in ("off", "on"):
                    t0 = time.perf_counter()
                    res = reconstruct(path, get_method(name), progress=False, band_limit=mode)
                    mse[mode], wall = evaluate_result(res, path)["mse"], time.perf_counter() - t0
                change = 100 * (mse["on"] / mse["off"] - 1)
                print(f"{material + ' ' + str(cells) + ' cells':14s} {electrons:10.0e} {name:8s} {mse['off']:9.5f} "
                      f"{mse['on']:9.5f} {change:+6.1f}% {wall:6.1f}", flush=True)


if __name__ == "__main__":
    main()

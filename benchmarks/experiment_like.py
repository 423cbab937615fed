"""The experiment-like series end to end: import the camera frames with the microscope log, calibrate (when
asked), reconstruct with each method, and score against the truth — beside the clean twin of the same series.

Run:  python benchmarks/experiment_like.py [--data ../shared/data/experiment_like/si_300kV] [--out DIR]
                                          [--methods tie icom flowtie] [--calibrate]

Prints, per method, the phase MSE (rad²) of the spoiled series as imported (no calibration), after
``flowtie-dask calibrate`` (with ``--calibrate``), and of the clean twin (``clean_series.h5``: no drift,
unrotated, 1e7 electrons per pattern; with ``--calibrate`` also with its beam centre measured, which the
camera's 2×2 binning put at 31.75 px), each against ``truth.npz`` (compared where the illumination is at
least half its maximum, blind to a global offset, 2π wraps and a whole-pixel shift).
The truth of the spoiling (``spoil.json``) is printed for comparison with what calibrate estimated; it is
never an input.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import zarr

from flowtie_dask.evaluate import evaluate_result
from flowtie_dask.interop.frames import import_frames
from flowtie_dask.interop.microscope_log import read_microscope_log
from flowtie_dask.methods import get_method
from flowtie_dask.runner import reconstruct
from flowtie_dask.store import open_scan_store, write_truth

HERE = os.path.dirname(os.path.abspath(__file__))


def add_truth(store: str, data: str) -> None:
    """Write the series' projected-phase truth into ``store`` (its truth/ group) for evaluate_result."""
    truth = np.load(os.path.join(data, "truth.npz"))["projected_phase"]
    meta = json.load(open(os.path.join(data, "truth_meta.json")))
    g = zarr.open_group(store, mode="r+")
    pixel = float(meta["potential_sampling_A"])
    start = meta["scan_start_A"]
    write_truth(g, np.asarray(truth, dtype=np.float64), pixel_size=(pixel, pixel), origin=(-start[0], -start[1]),
                attrs={"thickness_A": meta["thickness_A"], "source": "truth.npz of the experiment-like series"})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "experiment_like",
                                                       "si_300kV"))
    parser.add_argument("--out", default="experiment_like_data")
    parser.add_argument("--methods", nargs="+", default=["tie", "icom", "flowtie"])
    parser.add_argument("--calibrate", action="store_true", help="also run flowtie-dask calibrate on a copy")
    parser.add_argument("--model", default=None, help="FlowTIE model: a shipped name or a checkpoint (default: the "
                        "shipped default)")
    parser.add_argument("--dark-field-bin", type=int, default=None,
                        help="FlowTIE's dark-field super-pixels (1: the full form; default: the method's)")
    args = parser.parse_args()
    data = os.path.abspath(args.data)
    os.makedirs(args.out, exist_ok=True)
    log = read_microscope_log(os.path.join(data, "microscope.json"))
    stores = {}
    spoiled = os.path.join(args.out, "spoiled.zarr")
    if not os.path.exists(spoiled):
        t0 = time.perf_counter()
        import_frames(*[os.path.join(data, f"scan_{n}.h5") for n in ("minus", "focus", "plus")], out=spoiled,
                      log=log, dataset="entry/data/data")
        print(f"imported {spoiled} in {time.perf_counter() - t0:.1f} s", flush=True)
        add_truth(spoiled, data)
    stores["spoiled, as imported"] = spoiled
    if args.calibrate:
        calibrated = os.path.join(args.out, "calibrated.zarr")
        if not os.path.exists(calibrated):
            shutil.copytree(spoiled, calibrated)
            subprocess.run([sys.executable, "-m", "flowtie_dask.cli.main", "calibrate", calibrated,
                            "--figure", os.path.join(args.out, "calibration.png")], check=True)
        stores["spoiled, calibrated"] = calibrated
    clean = os.path.join(args.out, "clean.zarr")
    if not os.path.exists(clean):
        import h5py

        parts = []
        with h5py.File(os.path.join(data, "clean_series.h5"), "r") as f:
            for name in ("minus", "focus", "plus"):
                path = os.path.join(args.out, f"clean_{name}.npy")
                np.save(path, np.asarray(f[name]))
                parts.append(path)
        import_frames(*parts, out=clean, log=log)
        for p in parts:
            os.remove(p)
        add_truth(clean, data)
    stores["clean twin"] = clean
    if args.calibrate:  # the clean twin's beam sits at 31.75 px (2×2 binning of a 128-px grid), not at 32
        clean_c = os.path.join(args.out, "clean_centred.zarr")
        if not os.path.exists(clean_c):
            shutil.copytree(clean, clean_c)
            subprocess.run([sys.executable, "-m", "flowtie_dask.cli.main", "calibrate", clean_c, "--only", "centre"],
                           check=True, stdout=subprocess.DEVNULL)
        stores["clean twin, centre"] = clean_c
    spoil = json.load(open(os.path.join(data, "spoil.json")))
    print(f"truth of the spoiling (never an input): {spoil}")
    for name, path in stores.items():
        m = open_scan_store(path).metadata
        print(f"{name:22s} centre {tuple(round(c, 2) for c in m.detector_center)} px, rotation "
              f"{m.detector_rotation:.2f}°, transpose {m.detector_transpose}, drift "
              f"{[tuple(round(v, 3) for v in d) for d in m.scan_drift]} Å")
    print(f"{'method':8s}" + "".join(f" {n:>22s}" for n in stores) + "   (MSE rad²; truth variance)")
    for method in args.methods:
        line = f"{method:8s}"
        for path in stores.values():
            try:
                t0 = time.perf_counter()
                opts = {}
                if method == "flowtie":
                    opts = {k: v for k, v in (("model", args.model), ("dark_field_bin", args.dark_field_bin))
                            if v is not None}
                res = reconstruct(path, get_method(method, **opts), progress=False)
                ev = evaluate_result(res, path)
                line += f" {ev['mse']:12.5f} ({time.perf_counter() - t0:4.1f} s)"
                var = ev["truth_variance"]
            except ValueError as exc:
                line += f" {'refused':>22s}"
                print(f"  {method}: {str(exc).splitlines()[0]}", file=sys.stderr)
        print(line + f"   {var:.5f}", flush=True)


if __name__ == "__main__":
    main()

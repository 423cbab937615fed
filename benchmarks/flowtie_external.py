"""FlowTIE on optics and a simulator it was not trained for: the external MgO data set (abTEM 1.0.11, 200 kV,
25 mrad, Δf = −30/0/+30 Å, 24×24 scan of 0.351 Å, 36×36 detector of 0.1187 1/Å; ../shared/data/external).

The shipped model (300 kV, 20 mrad, ±20 Å, 64×64 detector) refuses these optics. This script trains for them
on random-cubic crystals only (never MgO), with our simulator, on the CPU, two ways in the same time:
from scratch, and from the shipped model (``train --init``: the SharedFlowModel takes any detector size).
It then reconstructs the external data with TIE, both FlowTIE models and GD, and the same MgO simulated by
our own multislice (so a loss can be told apart: optics/training budget vs. the other simulator).

Run:  python benchmarks/flowtie_external.py [--out external_data] [--count 40] [--seconds 300]
                                           [--variants scratch default]

Prints phase MSE (rad², blind to offset, wraps and a whole-pixel shift, after resampling the truth onto the
result grid) and wall times.
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np

from flowtie_dask.cli.main import main as cli
from flowtie_dask.evaluate import evaluate_result, phase_mse, resample_periodic
from flowtie_dask.model.checkpoint import shipped_model
from flowtie_dask.model.train import TrainingConfig, train
from flowtie_dask.methods import get_method
from flowtie_dask.runner import reconstruct
from flowtie_dask.simulate.collection import simulate_collection
from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store

HERE = os.path.dirname(os.path.abspath(__file__))
EXTERNAL = os.path.join(HERE, "..", "..", "shared", "data", "external", "mgo_200kV")
#: Our simulator at the external data's optics and sampling (exit-wave grid 48 over ≈ 8.4 Å, 36 px detector).
OPTICS = dict(energy=200e3, semiangle=25.0, defocus_step=30.0, scan_pixels=24, detector_pixels=36, gpts=48)


def external_store(out: str) -> tuple[str, np.ndarray, float]:
    """Import the three DataCubes (as a user would) and return (store, truth, truth pixel in Å)."""
    meta = json.load(open(os.path.join(EXTERNAL, "meta.json")))
    store = os.path.join(out, "mgo_external.zarr")
    if not os.path.exists(store):
        files = [os.path.join(EXTERNAL, f) for f in meta["files"]]
        args = ["import", *files, "--defocus", *[str(v) for v in meta["defocus_A"]], "--energy",
                str(meta["energy_eV"]), "--semiangle", str(meta["semiangle_mrad"]), "--periodic", "--out", store]
        if cli(args) != 0:
            raise SystemExit("import of the external data failed")
    truth = np.load(os.path.join(EXTERNAL, "truth.npz"))["projected_phase"]
    return store, truth, float(meta["potential_sampling_A"])


def own_mgo_store(out: str) -> str:
    """The same MgO (rocksalt, a = 4.212 Å, 2×2×2 cells) through our multislice, with its truth."""
    path = os.path.join(out, "mgo_ours.zarr")
    if not os.path.exists(path):
        from ase.build import bulk
        from ase.io import write

        cif = os.path.join(tempfile.mkdtemp(), "MgO.cif")
        write(cif, bulk("MgO", "rocksalt", a=4.212, cubic=True))
        simulate_to_store(SimulationParameters(material=cif, lateral_cells=2, thickness_cells=2, **OPTICS), path,
                          progress=False)
    return path


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="external_data")
    p.add_argument("--count", type=int, default=40, help="random-cubic training structures")
    p.add_argument("--seconds", type=float, default=300.0, help="training time of each model")
    p.add_argument("--dark-field-bin", type=int, default=None,
                   help="FlowTIE's dark-field super-pixels (1: the full form; default: the method's)")
    p.add_argument("--models", nargs="*", default=[], help="more FlowTIE models to measure (shipped names or "
                   "checkpoints)")
    p.add_argument("--variants", nargs="+", choices=("scratch", "default", "general"), default=["scratch", "default"],
                   help="train from scratch and/or from the shipped model; 'general': the shipped general model as it "
                        "is (no training)")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)

    coll = os.path.join(args.out, "train")
    trained = [v for v in args.variants if v != "general"]
    if trained and not os.path.exists(coll):
        t0 = time.perf_counter()
        simulate_collection(SimulationParameters(material="random-cubic", seed=500, lateral_size=8.4, **OPTICS), coll,
                            count=args.count, thickness_cells_range=(1, 3), progress=False)
        print(f"simulated {args.count} random-cubic structures in {time.perf_counter() - t0:.0f} s", flush=True)
    models = {}
    variants = {"scratch": ("scratch", None), "default": ("from default", shipped_model("paper-64"))}
    if "general" in args.variants:
        models["general, shipped"] = shipped_model("general")
    for m in args.models:
        models[os.path.basename(m)] = shipped_model(m)
    for name, init in (variants[v] for v in trained):
        path = os.path.join(args.out, f"model_{name.replace(' ', '_')}.pt")
        if not os.path.exists(path):
            cfg = TrainingConfig(epochs=100000, steps_per_epoch=20, batch_size=4, lr=1e-3, lr_schedule="cosine",
                                 time_limit=args.seconds, tile=16, n_q=256, init_from=init)
            hist = train(coll, path, cfg, progress=False, log=lambda s: None)["history"]
            print(f"trained '{name}': {len(hist)} epochs of 20 steps × 4 tiles in {hist[-1]['seconds']:.0f} s, "
                  f"validation loss {hist[-1]['validation']['total']:.4f}", flush=True)
        models[name] = path

    ext, truth, tpix = external_store(args.out)
    ours = own_mgo_store(args.out)
    rows = []
    for label, store in (("MgO, abTEM (external)", ext), ("MgO, our multislice", ours)):
        row = {}
        runs = [("TIE", lambda s: reconstruct(s, get_method("tie"), progress=False))]
        fast = {} if args.dark_field_bin is None else {"dark_field_bin": args.dark_field_bin}
        runs += [(f"FlowTIE ({n})", lambda s, m=m: reconstruct(s, get_method("flowtie", model=m, **fast),
                                                                progress=False))
                 for n, m in models.items()]
        runs += [("GD", lambda s: reconstruct(s, get_method("gd"), progress=False))]
        for method, run in runs:
            t0 = time.perf_counter()
            res = run(store)
            wall = time.perf_counter() - t0
            if store == ext:
                t = resample_periodic(truth, truth_pixel=(tpix, tpix), truth_origin=(0, 0), pixel=res.pixel_size,
                                      origin=res.origin, shape=res.phase.shape)
                mse, _ = phase_mse(res.phase, t, periodic=True)
                var = float(t.var())
            else:
                ev = evaluate_result(res, store)
                mse, var = ev["mse"], ev["truth_variance"]
            row[method] = (mse, wall)
            print(f"{label:24s} {method:22s} MSE {mse:.5f} rad² (truth variance {var:.4f})  {wall:6.1f} s", flush=True)
        rows.append((label, row))
    print()
    methods = list(rows[0][1])
    print(f"{'data':24s}" + "".join(f" {m:>22s}" for m in methods))
    for label, row in rows:
        print(f"{label:24s}" + "".join(f" {row[m][0]:15.5f} ({row[m][1]:3.0f}s)" for m in methods))


if __name__ == "__main__":
    main()

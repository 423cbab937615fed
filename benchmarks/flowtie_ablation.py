"""What each FlowTIE loss term and the architecture contribute: train variants on the same collection and
compare their phase MSE with TIE on held-out crystals (never seen in training).

Run:  python benchmarks/flowtie_ablation.py --data train64 --test GaAs_1cells.zarr SrTiO3_1cells.zarr \
          [--epochs 4] [--steps 40] [--variants full no-vf no-cont no-phase vf-only paper]
The collection comes from the README's paper-64 preset; the test stores from benchmarks/reconstruct_table1.py.
"""

import argparse
import os
import time

VARIANTS = {
    "full": {"alpha": 1, "beta": 1, "gamma": 1, "architecture": {"name": "SharedFlowModel"}},
    "no-vf": {"alpha": 0, "beta": 1, "gamma": 1, "architecture": {"name": "SharedFlowModel"}},
    "no-cont": {"alpha": 1, "beta": 0, "gamma": 1, "architecture": {"name": "SharedFlowModel"}},
    "no-phase": {"alpha": 1, "beta": 1, "gamma": 0, "architecture": {"name": "SharedFlowModel"}},
    "vf-only": {"alpha": 1, "beta": 0, "gamma": 0, "architecture": {"name": "SharedFlowModel"}},
    "paper": {"alpha": 1, "beta": 1, "gamma": 1, "architecture": {"name": "FlowPredictorModel"}, "n_q": None},
}


def main():
    import torch

    from flowtie_dask.evaluate import evaluate_result
    from flowtie_dask.methods import get_method
    from flowtie_dask.model.train import TrainingConfig, train
    from flowtie_dask.runner import reconstruct

    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--test", nargs="+", required=True)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--out", default="ablation_models")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    tie = {t: evaluate_result(reconstruct(t, get_method("tie"), progress=False), t)["mse"] for t in args.test}
    rows = []
    for name in args.variants:
        v = dict(VARIANTS[name])
        arch = v.pop("architecture")
        n_q = v.pop("n_q", 256)
        cfg = TrainingConfig(epochs=args.epochs, steps_per_epoch=args.steps, batch_size=4, lr=1e-3, tile=16, n_q=n_q,
                             architecture=arch, **v)
        out = os.path.join(args.out, f"{name}.pt")
        t0 = time.perf_counter()
        hist = train(args.data, out, cfg, progress=False, log=lambda s: None)["history"]
        secs = time.perf_counter() - t0
        mse = {t: evaluate_result(reconstruct(t, get_method("flowtie", model=out), progress=False), t)["mse"]
               for t in args.test}
        n_params = sum(p.numel() for p in torch.load(out, weights_only=True)["state_dict"].values())
        rows.append((name, hist[-1]["validation"], mse, secs, n_params))
        print(name, mse, f"{secs:.0f} s", flush=True)
    names = [os.path.basename(t).replace(".zarr", "") for t in args.test]
    print()
    print(f"{'variant':10s} {'params':>9s} {'train s':>8s} " + " ".join(f"{n:>16s}" for n in names) + "   (MSE rad², Δ vs TIE)")
    print(f"{'TIE':10s} {'':>9s} {'':>8s} " + " ".join(f"{tie[t]:16.5f}" for t in args.test))
    for name, _, mse, secs, n_params in rows:
        cells = " ".join(f"{mse[t]:8.5f} ({100 * (mse[t] / tie[t] - 1):+4.0f}%)" for t in args.test)
        print(f"{name:10s} {n_params:9d} {secs:8.0f} {cells}")


if __name__ == "__main__":
    main()

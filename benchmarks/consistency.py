"""The diffraction-power consistency of the projection (``--consistency N``): phase MSE and wall time of TIE and
FlowTIE with N = 0 (one projection, the paper's), 1, 2 and 4 iterations, on every store given.

Run:  python benchmarks/consistency.py STORE [STORE ...] [--methods tie flowtie] [--iterations 0 1 2 4]
                                      [--model general|paper-64|PATH] [--dark-field-bin B]

Stores with a truth (``truth/``), e.g. those the other benchmarks write:
  the Table 1 series        ``python benchmarks/reconstruct_table1.py --out table1_data [--electrons 1e4]``
                            → table1_data/{GaAs,SrTiO3}_{1,5}cells[_e10000].zarr
  the experiment-like Si     ``python benchmarks/experiment_like.py --calibrate --out experiment_like_data``
                            → experiment_like_data/{calibrated,clean_centred}.zarr
  the external MgO (abTEM)   ``python benchmarks/flowtie_external.py --variants general --out external_data``
                            → external_data/{mgo_external,mgo_ours}.zarr

Prints one row per (store, method): the MSE (rad², blind to offset, wraps and a whole-pixel shift) for each N,
the change of the default (N = 2 for FlowTIE) against N = 0, and the seconds each run took.
"""

import argparse
import os
import time

from flowtie_dask.evaluate import evaluate_result
from flowtie_dask.methods import get_method
from flowtie_dask.runner import reconstruct


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stores", nargs="+")
    p.add_argument("--methods", nargs="+", default=["tie", "flowtie"])
    p.add_argument("--iterations", type=int, nargs="+", default=[0, 1, 2, 4])
    p.add_argument("--model", default=None, help="FlowTIE model (default: the shipped default)")
    p.add_argument("--dark-field-bin", type=int, default=None, help="FlowTIE (1: the full form)")
    args = p.parse_args()
    head = "".join(f"  N={n:<2d} MSE     s" for n in args.iterations)
    print(f"{'store':34s} {'method':8s}{head}   N=2 vs N=0")
    for store in args.stores:
        for method in args.methods:
            opts = {}
            if method == "flowtie":
                opts = {k: v for k, v in (("model", args.model), ("dark_field_bin", args.dark_field_bin)) if v is not None}
            line, mse = f"{os.path.basename(os.path.normpath(store)):34s} {method:8s}", {}
            for n in args.iterations:
                t0 = time.perf_counter()
                try:
                    res = reconstruct(store, get_method(method, consistency=n, **opts), progress=False)
                except ValueError as exc:  # e.g. a model refusing these optics
                    line += f" {'refused':>15s}"
                    print(f"  {method} on {store}: {str(exc).splitlines()[0]}")
                    continue
                mse[n] = evaluate_result(res, store)["mse"]
                line += f"  {mse[n]:9.6f} {time.perf_counter() - t0:4.1f}"
            if 0 in mse and 2 in mse:
                line += f"   {100 * (mse[2] / mse[0] - 1):+6.1f} %"
            print(line, flush=True)


if __name__ == "__main__":
    main()

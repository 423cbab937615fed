"""Is the GD baseline converged? GD started from FlowTIE's phase (``initial=``) against GD from O = 1.

Run:  python benchmarks/gd_seeded.py [--out table1_data] [--iterations 10 30]
Uses the stores and the FlowTIE / GD results that ``benchmarks/reconstruct_table1.py --methods flowtie gd``
wrote into the same folder (run that first). Prints phase MSE (rad²), final loss and wall time.
"""

import argparse
import os
import time

from flowtie_dask.evaluate import evaluate_result
from flowtie_dask.methods import get_method
from flowtie_dask.results import open_result
from flowtie_dask.runner import reconstruct

SETTINGS = ["GaAs_1cells", "GaAs_5cells", "SrTiO3_1cells", "SrTiO3_5cells"]

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="table1_data")
parser.add_argument("--iterations", nargs="+", type=int, default=[10, 30])
args = parser.parse_args()

print(f"{'setting':14s} {'start':8s} {'its':>4s} {'MSE rad²':>9s} {'final loss':>11s} {'s':>6s}")
for name in SETTINGS:
    store = os.path.join(args.out, f"{name}.zarr")
    flowtie = open_result(os.path.join(args.out, f"{name}_flowtie.zarr"))
    flat = open_result(os.path.join(args.out, f"{name}_gd.zarr"))
    print(f"{name:14s} {'flowtie':8s} {0:4d} {evaluate_result(flowtie, store)['mse']:9.5f} {'':>11s} "
          f"{flowtie.attrs['seconds']:6.1f}")
    for its in args.iterations:
        t0 = time.perf_counter()
        res = reconstruct(store, get_method("gd", iterations=its, initial=flowtie), progress=False)
        wall = time.perf_counter() - t0
        print(f"{name:14s} {'flowtie':8s} {its:4d} {evaluate_result(res, store)['mse']:9.5f} "
              f"{res.attrs['final_loss']:11.4e} {wall:6.1f}", flush=True)
    print(f"{name:14s} {'O = 1':8s} {flat.attrs['iterations']:4d} {evaluate_result(flat, store)['mse']:9.5f} "
          f"{flat.attrs['final_loss']:11.4e} {flat.attrs['seconds']:6.1f}", flush=True)

"""Phase MSE and wall time of TIE, FlowTIE and GD at the paper's Table 1 settings.

Run:  python benchmarks/reconstruct_table1.py [--out DIR] [--methods tie flowtie gd gd-dense] [--model PATH]
                                            [--device gpu]
                                            [--dose E_PER_A2]
Settings (paper §3): 300 kV, 20 mrad, Δf = −20/0/+20 Å, 64×64 scan with step = pixel, 64×64 detector;
GaAs 2×2 cells at 1 and 5 cells (5.7, 28.3 Å), SrTiO3 3×3 cells at 1 and 5 cells (3.9, 19.5 Å).
MSE: flowtie-dask's phase MSE against σ·Σv_z (blind to offset, 2π wraps, whole-pixel shifts), rad².
"""

import argparse
import os
import time

import numpy as np

from flowtie_dask.evaluate import evaluate_result, figure_panel
from flowtie_dask.methods import REGISTRY, get_method
from flowtie_dask.runner import reconstruct
from flowtie_dask.results import open_result, write_result
from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store
from flowtie_dask.store import open_scan_store

SETTINGS = [("GaAs", 2, 1), ("GaAs", 2, 5), ("SrTiO3", 3, 1), ("SrTiO3", 3, 5)]

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="table1_data")
parser.add_argument("--methods", nargs="+", default=["tie", "gd"],
                    help="any registered method: tie, flowtie, icom, gd (diagonal A = diag(O), converged), gd-dense "
                         "(the paper's literal dense "
                         "N²×N² A from the identity, 100 iterations; ≈ 3 min per setting on 2 CPU cores)")
parser.add_argument("--model", default=None,
                    help="FlowTIE checkpoint or shipped model name (general, paper-64; default: the shipped default); "
                         "results of a named model go to *_flowtie-<name>.zarr")
parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                    help="gpu: simulation, TIE/FlowTIE tiles (CuPy, torch through DLPack) and GD (torch) on the GPU")
parser.add_argument("--dose", type=float, default=None,
                    help="electron dose in e/Å² for Poisson noise (default: noise-free, as the paper)")
parser.add_argument("--electrons", type=float, default=None,
                    help="Poisson noise at this many electrons per pattern (the dose in e/Å² follows from the scan "
                         "step; the stores are *_e<N>.zarr beside the noise-free ones)")
parser.add_argument("--symmetry", choices=("none", "mirror", "d4"), default="none",
                    help="FlowTIE: average over the specimen's mirrors / the square's 8 symmetries "
                         "(results go to *_flowtie-<symmetry>.zarr)")
parser.add_argument("--dense-readout", choices=("projection", "diagonal"), default="projection",
                    help="gd-dense: the object from the projected exit waves A·P (as TIE/FlowTIE) or diag(A) "
                         "(results go to *_gd-dense-diagonal.zarr)")
parser.add_argument("--dark-field-bin", type=int, default=None,
                    help="FlowTIE's dark-field super-pixels (1 = the full form; default: the method's default); "
                         "results go to *_flowtie[-model]-b<N>.zarr")
parser.add_argument("--settings", nargs="+", type=int, default=[0, 1, 2, 3], help="indices into the four settings")
args = parser.parse_args()
unknown = sorted(set(args.methods) - set(REGISTRY))
if unknown:
    parser.error(f"unknown method(s) {unknown}: use {', '.join(REGISTRY)}")
MODEL_TAG = "" if args.model is None else "-" + os.path.splitext(os.path.basename(args.model))[0]
MODEL_TAG += "" if args.dark_field_bin is None else f"-b{args.dark_field_bin}"
TAGS = [f"flowtie{MODEL_TAG}-{args.symmetry}" if m == "flowtie" and args.symmetry != "none" else
        f"flowtie{MODEL_TAG}" if m == "flowtie" else
        "gd-dense-diagonal" if m == "gd-dense" and args.dense_readout == "diagonal" else m for m in args.methods]
os.makedirs(args.out, exist_ok=True)

rows = []
for material, lateral, cells in [SETTINGS[i] for i in args.settings]:
    path = os.path.join(args.out, f"{material}_{cells}cells.zarr")
    dose = args.dose
    if args.electrons is not None:  # the noise-free store first: its scan step sets the dose
        if args.dose is not None:
            parser.error("give --dose (e/Å²) or --electrons (per pattern), not both")
        if not os.path.exists(path):
            simulate_to_store(SimulationParameters(material=material, lateral_cells=lateral, thickness_cells=cells,
                                                   scan_pixels=64, detector_pixels=64, device=args.device), path,
                              progress=False)
        sx, sy = open_scan_store(path).metadata.scan_step
        dose = args.electrons / (sx * sy)
        path = os.path.join(args.out, f"{material}_{cells}cells_e{args.electrons:g}.zarr")
    if not os.path.exists(path):
        t0 = time.perf_counter()
        simulate_to_store(SimulationParameters(material=material, lateral_cells=lateral, thickness_cells=cells,
                                               scan_pixels=64, detector_pixels=64, device=args.device,
                                               dose=dose), path,
                          progress=False)
        print(f"simulated {path} in {time.perf_counter() - t0:.1f} s", flush=True)
    else:
        had = open_scan_store(path).metadata.provenance.get("dose_e_per_A2")
        if not (had == dose or (had is not None and dose is not None and abs(had - dose) <= 1e-9 * dose)):
            raise SystemExit(f"{path} was simulated with dose {had} e/Å², not {dose}: use another --out")
    row = {"material": material, "thickness": None}
    panels = {}
    for method, tag in zip(args.methods, TAGS):
        result_path = path[:-len(".zarr")] + f"_{tag}.zarr"
        if os.path.exists(result_path):  # reuse an earlier run (its time is the recorded one)
            res = open_result(result_path)
            wall = res.attrs["seconds"]
        else:
            options = {"flowtie": {"model": args.model, "symmetry": args.symmetry, "dark_field_bin": args.dark_field_bin},
                       "gd-dense": {"readout": args.dense_readout}}.get(method, {})
            m = get_method(method, **{k: v for k, v in options.items() if v is not None})
            t0 = time.perf_counter()
            res = reconstruct(path, m, progress=False, device=args.device)
            wall = time.perf_counter() - t0
            res.attrs["seconds"] = wall
            write_result(res, result_path)
        ev = evaluate_result(res, path)
        row[tag] = (ev["mse"], wall)
        row["var"] = ev["truth_variance"]
        panels.setdefault("truth", ev["truth_on_grid"] - ev["truth_on_grid"].mean())
        panels[f"{tag} ({ev['mse']:.4f} rad²)"] = ev["aligned"] - ev["truth_on_grid"].mean()
    # Figure 3: phase gradient of truth and FlowTIE (object plane), then truth | TIE | FlowTIE | GD phase
    grads = []
    for name in [k for k in panels if k == "truth" or k.startswith("flowtie")]:
        gx, gy = np.gradient(panels[name])
        grads.append((f"∇ {name.split(' ')[0]}", gx, gy))
    figure_panel(panels, os.path.join(args.out, f"fig3_{material}_{cells}cells.png"), gradient=grads,
                 title=f"{material}, {cells} cell(s) thick")
    row["thickness"] = open_scan_store(path).metadata.provenance["thickness_A"]
    rows.append(row)
    print(row, flush=True)

print()
head = f"{'material':8s} {'t (Å)':>6s} {'truth var':>10s}" + "".join(f" {m + ' MSE':>10s} {m + ' s':>7s}" for m in TAGS)
print(head)
for r in rows:
    line = f"{r['material']:8s} {r['thickness']:6.1f} {r['var']:10.4f}"
    for m in TAGS:
        if m in r:
            line += f" {r[m][0]:10.4f} {r[m][1]:7.2f}"
        else:
            line += f" {'n/a':>10s} {'':>7s}"
    print(line)

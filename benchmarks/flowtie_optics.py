"""FlowTIE at optics it was never trained on, against TIE, iCoM and the diagonal GD (issue 15, point 4).

Run:  python benchmarks/flowtie_optics.py [--out optics_data] [--methods tie flowtie icom gd]
                                         [--model general] [--electrons N] [--split] [--cases 0 1 …]
                                         [--device gpu]

Cases: three microscopes × GaAs (2×2 cells; 1 and 4 cells thick) and SrTiO3 (3×3 cells; 1 and 5 cells thick):
200 kV / 25 mrad / Δf = ±30 Å / 0.25 Å step; 80 kV / 30 mrad / ±40 Å / 0.3 Å; 300 kV / 15 mrad / ±50 Å / 0.4 Å.
The scan covers the supercell once (step = supercell / round(supercell / step), so within 2 % of the asked
step); 64×64 detector on the 64×64 simulation grid (exit-wave pixel ≈ 0.18 Å ≠ step). flowtie-dask's own
multislice, stored with the probe-frame truth so that ``--split`` can say where FlowTIE loses: the MSE with the
exact probe-frame phase put into FlowTIE's bright field (BF, mean intensity above 10 % of its maximum) or dark
field (DF), as benchmarks/flowtie_oracle.py does for Table 1.
MSE: the phase MSE against σ·Σv_z (blind to offset, 2π wraps, whole-pixel shifts), rad².
"""

import argparse
import os
import sys
import time

import numpy as np

from flowtie_dask.evaluate import evaluate_result
from flowtie_dask.methods import get_method
from flowtie_dask.model.checkpoint import CheckpointError
from flowtie_dask.runner import reconstruct
from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store
from flowtie_dask.store import open_scan_store

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flowtie_oracle import Mixed  # noqa: E402

#: (label, energy eV, semi-angle mrad, defocus step Å, scan step Å)
OPTICS = [("200kV-25mrad-30A-0.25A", 200e3, 25.0, 30.0, 0.25), ("80kV-30mrad-40A-0.30A", 80e3, 30.0, 40.0, 0.30),
          ("300kV-15mrad-50A-0.40A", 300e3, 15.0, 50.0, 0.40)]
#: (material, lateral cells, thickness cells, lattice constant Å)
SPECIMENS = [("GaAs", 2, 1, 5.6533), ("GaAs", 2, 4, 5.6533), ("SrTiO3", 3, 1, 3.905), ("SrTiO3", 3, 5, 3.905)]
CASES = [(o, s) for o in OPTICS for s in SPECIMENS]


def simulate_case(case, out, electrons=None):
    """The store of one case (simulated once; with ``electrons`` a noisy twin of the noise-free one)."""
    (label, energy, alpha, dz, step), (material, lateral, cells, a) = case
    n = int(round(lateral * a / step))
    path = os.path.join(out, f"{label}_{material}_{cells}cells.zarr")
    params = SimulationParameters(material=material, lateral_cells=lateral, thickness_cells=cells, energy=energy,
                                  semiangle=alpha, defocus_step=dz, scan_pixels=n, detector_pixels=64,
                                  probe_frame=True)
    if not os.path.exists(path):
        simulate_to_store(params, path, progress=False)
    if electrons:
        noisy = path[:-len(".zarr")] + f"_e{electrons:g}.zarr"
        if not os.path.exists(noisy):
            sx, sy = open_scan_store(path).metadata.scan_step
            simulate_to_store(SimulationParameters(**{**params.__dict__, "dose": electrons / (sx * sy)}), noisy,
                              progress=False)
        path = noisy
    return path


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="optics_data")
    p.add_argument("--methods", nargs="+", default=["tie", "flowtie", "icom", "gd"])
    p.add_argument("--model", default=None, help="FlowTIE checkpoint or shipped name (default: the shipped default)")
    p.add_argument("--electrons", type=float, default=None, help="Poisson noise at N e⁻ per pattern")
    p.add_argument("--split", action="store_true", help="also FlowTIE with the exact BF / DF probe-frame phase")
    p.add_argument("--cases", nargs="+", type=int, default=list(range(len(CASES))))
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--dark-field-bin", type=int, default=None,
                   help="FlowTIE's dark-field super-pixels (1 = the full form; default: the method's default)")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for i in args.cases:
        case = CASES[i]
        path = simulate_case(case, args.out, args.electrons)
        row = {"case": f"{case[0][0]} {case[1][0]} {case[1][2]}c"}
        flowtie_options = {k: v for k, v in (("model", args.model), ("dark_field_bin", args.dark_field_bin))
                           if v is not None}
        for name in args.methods:
            method = get_method(name, **(flowtie_options if name == "flowtie" else {}))
            t0 = time.perf_counter()
            try:
                res = reconstruct(path, method, progress=False, device=args.device)
            except CheckpointError as exc:
                row[name] = (float("nan"), 0.0)
                print(f"{row['case']}: {name} refused: {exc}", flush=True)
                continue
            row[name] = (evaluate_result(res, path)["mse"], time.perf_counter() - t0)
        if args.split:
            st = open_scan_store(path)
            truth = np.asarray(st.truth["probe_frame_phase"][:], dtype=np.float64)
            mean = np.asarray(st.intensity[1]).mean(axis=(0, 1))
            bright = mean > 0.1 * mean.max()
            base = get_method("flowtie", **flowtie_options)
            for tag, mask in (("+BF", bright), ("+DF", ~bright)):
                res = reconstruct(path, Mixed(truth, base, mask, label=tag), tile_size=None, progress=False)
                row["flowtie" + tag] = (evaluate_result(res, path)["mse"], 0.0)
            res = reconstruct(path, Mixed(truth), tile_size=None, progress=False)
            row["oracle"] = (evaluate_result(res, path)["mse"], 0.0)
        rows.append(row)
        print({k: (v if isinstance(v, str) else round(v[0], 6)) for k, v in row.items()}, flush=True)
    cols = [c for c in rows[0] if c != "case"] if rows else []
    print()
    print(f"phase MSE (rad²){'' if not args.electrons else f' at {args.electrons:g} e⁻/pattern'}; "
          "FlowTIE vs TIE = FlowTIE/TIE − 1")
    print(f"{'case':28s}" + "".join(f"{c:>12s}" for c in cols) + f"{'vs TIE':>9s}")
    for r in rows:
        vs = (r["flowtie"][0] / r["tie"][0] - 1) * 100 if "flowtie" in r and "tie" in r else float("nan")
        print(f"{r['case']:28s}" + "".join(f"{r[c][0]:12.5f}" for c in cols) + f"{vs:8.0f}%")
    times = [c for c in ("tie", "flowtie", "icom", "gd") if c in cols]
    print("seconds: " + ", ".join(f"{c} {np.mean([r[c][1] for r in rows]):.1f}" for c in times))


if __name__ == "__main__":
    main()

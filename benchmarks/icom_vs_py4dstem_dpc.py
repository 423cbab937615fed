"""iCoM (``--method icom``) against py4DSTEM's DPC on the same scans (the Table 1 settings).

Run:  python benchmarks/icom_vs_py4dstem_dpc.py [--data DIR]   (DIR: the stores of reconstruct_table1.py)

For each focus scan: our iCoM through the runner (time includes reading and checking the store), and
py4DSTEM 0.14's ``DPC`` (CoM with the rotation and transpose forced to the store's, 64 iterations of its
iterative phase solve, no filters), both scored by flowtie-dask's phase MSE against σ·Σv_z (blind to offset,
2π wraps and whole-pixel shifts). py4DSTEM's DPC phase is in its own units: it is also scored after the
least-squares scale to the truth (``scaled``), which shows the shape apart from the units.
"""

import argparse
import contextlib
import io
import os
import time
import warnings

import numpy as np

os.environ.setdefault("CUPY_PYLOPS", "0")

from flowtie_dask.evaluate import evaluate_result  # noqa: E402
from flowtie_dask.interop.py4dstem import store_to_datacubes  # noqa: E402
from flowtie_dask.methods import get_method  # noqa: E402
from flowtie_dask.results import ReconstructionResult  # noqa: E402
from flowtie_dask.runner import reconstruct  # noqa: E402
from flowtie_dask.store import open_scan_store  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--data", default="table1_data", help="folder with the Table 1 stores (*_Ncells.zarr)")
args = parser.parse_args()

rows = []
for name in ("GaAs_1cells", "GaAs_5cells", "SrTiO3_1cells", "SrTiO3_5cells"):
    path = os.path.join(args.data, f"{name}.zarr")
    if not os.path.exists(path):
        print(f"{path} missing: run benchmarks/reconstruct_table1.py --out {args.data} first")
        continue
    st = open_scan_store(path)
    t0 = time.perf_counter()
    ours = reconstruct(path, get_method("icom"), progress=False)
    t_ours = time.perf_counter() - t0
    ev = evaluate_result(ours, path)

    import py4DSTEM

    mid = int(np.argsort(st.metadata.c10)[1])
    cube = store_to_datacubes(path)[mid]
    t0 = time.perf_counter()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        dpc = py4DSTEM.process.phase.DPC(datacube=cube, energy=st.metadata.energy, verbose=False)
        dpc.preprocess(force_com_rotation=st.metadata.detector_rotation,
                       force_com_transpose=st.metadata.detector_transpose, plot_center_of_mass=None,
                       plot_rotation=False)
        dpc.reconstruct(max_iter=64, progress_bar=False, gaussian_filter=False, butterworth_filter=False)
    t_dpc = time.perf_counter() - t0
    phase = np.asarray(dpc.object_phase, dtype=np.float64)
    if phase.shape != ours.phase.shape:  # py4DSTEM pads the object; keep the scanned window
        phase = phase[: ours.phase.shape[0], : ours.phase.shape[1]]
    res = ReconstructionResult(phase=phase, amplitude=np.ones_like(phase), illumination=np.ones_like(phase),
                               pixel_size=ours.pixel_size, origin=ours.origin, periodic=ours.periodic,
                               attrs={"source": path, "scan_metadata": ours.attrs["scan_metadata"]})
    ev_dpc = evaluate_result(res, path)
    truth = ev_dpc["truth_on_grid"] - ev_dpc["truth_on_grid"].mean()
    aligned = ev_dpc["aligned"] - ev_dpc["aligned"].mean()
    scale = float(np.sum(aligned * truth) / np.sum(aligned * aligned))
    scaled = float(np.mean((scale * aligned - truth) ** 2))
    rows.append((name, ev["truth_variance"], ev["mse"], t_ours, ev_dpc["mse"], scaled, scale, t_dpc))

print(f"{'scan':14s} {'truth var':>9s} {'iCoM MSE':>9s} {'iCoM s':>7s} {'DPC MSE':>9s} {'scaled':>9s} "
      f"{'scale':>7s} {'DPC s':>7s}")
for r in rows:
    print(f"{r[0]:14s} {r[1]:9.5f} {r[2]:9.5f} {r[3]:7.2f} {r[4]:9.5f} {r[5]:9.5f} {r[6]:7.3f} {r[7]:7.2f}")

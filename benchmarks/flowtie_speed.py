"""How far is FlowTIE from the floor, and what does its fast form cost in accuracy? One run measures, on one store:

* the floor: reading the three scans once (``StoreHandle.read_block``: decompress + CRC check) plus one batched
  FFT over the detector axes and two over the scan axes (forward and inverse) of a complex64 array of one scan's
  size (``scipy.fft``, the project's NumPy FFT, one thread), i.e. what any per-pattern phase method must do;
* TIE, FlowTIE's full form (``--dark-field-bin 1``: the model on all Qx·Qy detector pixels) and its fast forms
  (the model on the pixels with |q| ≤ (1 + margin)·α/λ one by one and on b×b dark-field super-pixels), each
  through ``flowtie_dask.runner.reconstruct`` with its defaults (in-process Dask threads, the whole scan as
  one tile with its halo);

with the wall time (the fastest of ``--best-of`` runs, after untimed warm-up runs of TIE and a fast FlowTIE that
load torch and the model), its ratio to the floor and the phase MSE against the truth (``evaluate_result``, rad²); for the fast
forms also the mean squared phase difference to the full form's result (offset removed).

Run:  python benchmarks/flowtie_speed.py [--out flowtie_speed_data] [--forms 4:0 8:0 4:0.25 2:0] [--best-of 2]
                                         [--threads 1 2] [--consistency 0 2]

The store: GaAs 2×2 cells (11.3 Å), one cell thick (5.7 Å), 64×64 positions × 64×64 detector at the paper's
sampling (Table 1's first setting), simulated into ``--out`` once and then reused. The load average of the
machine is printed before and after: the figures are only comparable on an otherwise idle machine.
"""

import argparse
import os
import time

import numpy as np

from flowtie_dask.evaluate import evaluate_result
from flowtie_dask.methods import get_method
from flowtie_dask.runner import reconstruct
from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store
from flowtie_dask.store import StoreHandle

from floor import floor_block  # benchmarks/floor.py, next to this script


def table1_store(out: str) -> str:
    """GaAs 5.7 Å, 64×64 positions × 64×64 detector (made once in ``out``, then reused)."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "gaas_64.zarr")
    if not os.path.exists(path):
        simulate_to_store(SimulationParameters(material="GaAs", lateral_cells=2, thickness_cells=1, scan_pixels=64,
                                               detector_pixels=64), path, progress=False)
    return path


def floor_once(handle: StoreHandle) -> float:
    """Seconds to read the three scans once and run the three batched FFTs (see the module docstring)."""
    rx, ry = handle.geometry().scan_shape
    return floor_block(handle, range(rx), range(ry))


def best(fn, n: int):
    """(fastest seconds, last result) of ``n`` calls."""
    times, out = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def phase_difference(a, b) -> float:
    """Mean squared wrapped difference of two phases (rad²), their mean offset removed."""
    d = np.angle(np.exp(1j * (np.asarray(a.phase) - np.asarray(b.phase))))
    return float(np.mean((d - d.mean()) ** 2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="flowtie_speed_data", help="folder of the store (made once, then reused)")
    parser.add_argument("--forms", nargs="+", default=["4:0", "8:0", "4:0.25", "2:0"], metavar="B:MARGIN",
                        help="fast forms to measure: dark-field bin and bright-field margin")
    parser.add_argument("--model", default="paper-64", help="FlowTIE checkpoint or shipped model name")
    parser.add_argument("--best-of", type=int, default=2, help="each time is the fastest of this many runs")
    parser.add_argument("--full-best-of", type=int, default=1, help="runs of the (slow) full form")
    parser.add_argument("--consistency", type=int, nargs="+", default=[0, 2],
                        help="diffraction-power consistency iterations of the fast forms, one row per value (the full "
                             "form runs at the last; Δ full is printed for the rows with the same value)")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch threads for the fast forms, one row per value (default: torch's own count; "
                             "the fast form spreads its passes over that many threads)")
    args = parser.parse_args()
    import torch

    path = table1_store(args.out)
    handle = StoreHandle(path)
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads", flush=True)
    floor_once(handle)  # warms the page cache and the codec
    floor, _ = best(lambda: floor_once(handle), 3)
    print(f"{'method':56s} {'wall s':>7s} {'× floor':>8s} {'MSE rad²':>10s} {'Δ full rad²':>12s}")
    print(f"{'floor (read 3 scans + 3 FFTs)':56s} {floor:7.2f} {1.0:8.2f}", flush=True)
    for method in (get_method("tie"), get_method("flowtie", model=args.model, dark_field_bin=8)):
        reconstruct(path, method, progress=False)  # warm-up, untimed: imports, the model, the allocator's heap

    def measure(label, method, n, full=None):
        seconds, res = best(lambda: reconstruct(path, method, progress=False), n)
        mse = evaluate_result(res, path)["mse"]
        diff = "" if full is None else f"{phase_difference(res, full):12.2e}"
        print(f"{label:56s} {seconds:7.2f} {seconds / floor:8.2f} {mse:10.6f} {diff}", flush=True)
        return res

    measure("tie", get_method("tie"), args.best_of)
    c_full = args.consistency[-1]
    full = measure(f"flowtie full (dark_field_bin 1, consistency {c_full})",
                   get_method("flowtie", model=args.model, dark_field_bin=1, consistency=c_full), args.full_best_of)
    default_threads = torch.get_num_threads()
    for threads in args.threads or [default_threads]:
        torch.set_num_threads(threads)
        for form in args.forms:
            b, margin = form.split(":")
            for c in args.consistency:
                method = get_method("flowtie", model=args.model, dark_field_bin=int(b),
                                    bright_field_margin=float(margin), consistency=c)
                measure(f"flowtie fast (bin {b}, margin {float(margin):g}, {threads} thr, cons. {c})", method,
                        args.best_of, full if c == c_full else None)
    torch.set_num_threads(default_threads)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)


if __name__ == "__main__":
    main()

"""Throughput of the distributed reconstruction on a large scan: patterns per second and GB/s for TIE and
FlowTIE on a local CPU cluster or on GPUs (dask-cuda), with the phase MSE against the truth.

Run:  python benchmarks/reconstruct_throughput.py [--repeat 4] [--gpus 1 | --workers N] [--threads 1 8]
                                                 [--methods tie flowtie]

The scan: GaAs 2×2 cells, 5.7 Å, at the paper's sampling (64×64 positions over the 11.3 Å supercell, 64×64
detector, the shipped FlowTIE model's optics), simulated once and repeated R×R times over the scan. The
simulated data are periodic over the supercell, so the repeated store is an exact scan of an R-times wider
supercell (R = 4: 256×256 positions, 3.2 GB of float32 patterns) with the same detector sampling.
"""

import argparse
import os
import time

import numpy as np

from flowtie_dask.cluster import cluster_client
from flowtie_dask.evaluate import evaluate_result
from flowtie_dask.methods import get_method
from flowtie_dask.runner import reconstruct
from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store
from flowtie_dask.store import open_scan_store, write_scan_store, write_truth


def repeated_store(src: str, dst: str, repeat: int) -> str:
    """Write the scan of ``src`` repeated ``repeat``×``repeat`` times over the scan (and its truth) to ``dst``."""
    st = open_scan_store(src)
    rx, ry = st.scan_shape
    truth = np.asarray(st.truth["projected_phase"])
    with write_scan_store(dst, st.metadata, scan_shape=(rx * repeat, ry * repeat), detector_shape=st.detector_shape,
                          overwrite=True) as g:
        block = np.asarray(st.intensity)
        for i in range(repeat):
            for j in range(repeat):
                g["intensity"][:, i * rx:(i + 1) * rx, j * ry:(j + 1) * ry] = block
        pattrs = st.truth["projected_phase"].attrs
        write_truth(g, np.tile(truth, (repeat, repeat)), pixel_size=tuple(pattrs["pixel_size_A"]),
                    origin=tuple(pattrs["origin_A"]), attrs=dict(st.truth.attrs))
    return dst


def tiled_gaas_store(out: str, repeat: int) -> str:
    """The benchmark scan in ``out``: GaAs 2×2 cells at the paper's sampling, simulated once (64×64 positions,
    64×64 detector) and repeated ``repeat``×``repeat`` times over the scan; made once, then reused."""
    os.makedirs(out, exist_ok=True)
    base = os.path.join(out, "gaas_64.zarr")
    if not os.path.exists(base):
        simulate_to_store(SimulationParameters(material="GaAs", lateral_cells=2, scan_pixels=64, detector_pixels=64,
                                               device="auto"), base, progress=False)
    big = os.path.join(out, f"gaas_{64 * repeat}.zarr")
    if not os.path.exists(big):
        t0 = time.perf_counter()
        repeated_store(base, big, repeat)
        print(f"wrote {big} in {time.perf_counter() - t0:.1f} s", flush=True)
    return big


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=4, help="R: the scan is R·64 positions per side")
    parser.add_argument("--methods", nargs="+", default=["tie", "flowtie"])
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="CPU worker processes (default: all cores)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="threads per worker; several values: one cluster (and row per method) for each")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--halo", type=int, default=16)
    parser.add_argument("--out", default="throughput_data")
    args = parser.parse_args()
    big = tiled_gaas_store(args.out, args.repeat)
    st = open_scan_store(big)
    n_patterns = st.scan_shape[0] * st.scan_shape[1]
    gbytes = 3 * n_patterns * st.detector_shape[0] * st.detector_shape[1] * 4 / 1e9
    where = f"{args.gpus} GPU(s), dask-cuda" if args.gpus else f"CPU, {args.workers or os.cpu_count()} workers"
    print(f"scan {st.scan_shape[0]}×{st.scan_shape[1]}, detector {st.detector_shape}, {gbytes:.2f} GB; {where}")
    print(f"{'method':8s} {'threads':>7s} {'wall s':>7s} {'patterns/s':>11s} {'MB/s':>6s} {'MSE rad²':>9s}")
    for threads in args.threads:
        with cluster_client(workers=args.workers, threads=threads, gpus=args.gpus, dashboard=None,
                            announce=None) as client:
            for method in args.methods:
                t0 = time.perf_counter()
                res = reconstruct(big, get_method(method), tile_size=args.tile, halo=args.halo, client=client,
                                  progress=False, device="gpu" if args.gpus else "cpu")
                wall = time.perf_counter() - t0
                mse = evaluate_result(res, big)["mse"]
                print(f"{method:8s} {threads:7d} {wall:7.1f} {n_patterns / wall:11.0f} {1e3 * gbytes / wall:6.0f} "
                      f"{mse:9.5f}", flush=True)


if __name__ == "__main__":
    main()

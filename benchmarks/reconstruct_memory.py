"""Peak worker memory of the tiled TIE reconstruction for a 128×128-position scan against a 64×64 one.

Run:  python benchmarks/reconstruct_memory.py [--tile 32] [--halo 16] [--workers 2]
GaAs 2×2 cells, 5.7 Å, 64×64 detector; the 128² scan has half the step of the 64² one (same patterns per
tile, four times the data). Each reconstruction runs on a fresh LocalCluster (one thread per worker process)
and reports the largest peak RSS among its workers (getrusage on each worker after the run), the wall time,
and the data size. Memory per worker should follow the tile size, not the scan size.
"""

import argparse
import os
import resource
import time

from flowtie_dask.cluster import cluster_client
from flowtie_dask.methods import get_method
from flowtie_dask.runner import reconstruct
from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store


def peak_mib():
    """Peak RSS of the calling process (run on each worker)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tile", type=int, default=32)
    parser.add_argument("--halo", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="memory_data")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)


    print(f"{'scan':>8s} {'data MiB':>9s} {'tiles':>6s} {'wall s':>7s} {'peak worker MiB':>16s}")
    for n in (64, 128):
        path = os.path.join(args.out, f"gaas_{n}.zarr")
        if not os.path.exists(path):
            simulate_to_store(SimulationParameters(material="GaAs", lateral_cells=2, scan_pixels=n, detector_pixels=64),
                              path, progress=False)
        data = 3 * n * n * 64 * 64 * 4 / 2**20
        with cluster_client(workers=args.workers, threads=1, dashboard=None, announce=None) as client:
            t0 = time.perf_counter()
            res = reconstruct(path, get_method("tie"), tile_size=args.tile, halo=args.halo, client=client,
                              progress=False)
            wall = time.perf_counter() - t0
            peaks = client.run(peak_mib)
        print(f"{n:>4d}x{n:<3d} {data:9.0f} {res.attrs['n_tiles']:6d} {wall:7.1f} {max(peaks.values()):16.0f}", flush=True)


if __name__ == "__main__":  # worker processes are spawned: guard the entry point
    main()

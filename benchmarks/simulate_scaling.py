"""Wall time and peak memory of `flowtie-dask simulate GaAs` at the paper's size and its scaling.

Run:  python benchmarks/simulate_scaling.py [--workers N] [--scan 32 48 64]
Each size runs the real CLI in a fresh process (so the peak RSS of the process tree is measured) and prints
one row: scan positions, wall seconds, positions per second, peak RSS (MiB) and the store size.
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

parser = argparse.ArgumentParser()
parser.add_argument("--scan", type=int, nargs="+", default=[32, 48, 64])
parser.add_argument("--detector", type=int, default=64)
parser.add_argument("--thickness-cells", type=int, default=1)
parser.add_argument("--workers", type=int, default=0, help="0 = in-process threads")
args = parser.parse_args()

print(f"GaAs 2x2 cells, {args.thickness_cells} cell(s) thick, {args.detector}^2 detector, "
      f"workers={args.workers}, {os.cpu_count()} cores")
print(f"{'scan':>8} {'wall s':>8} {'pos/s':>8} {'peak MiB':>9} {'store MiB':>9}")
for n in args.scan:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "g.zarr")
        cmd = [sys.executable, "-m", "flowtie_dask.cli.main", "simulate", "GaAs", "--out", out,
               "--thickness-cells", str(args.thickness_cells), "--scan-pixels", str(n),
               "--detector-pixels", str(args.detector), "--workers", str(args.workers), "--no-progress"]
        t0 = time.perf_counter()
        # wait4 gives the peak RSS of this child (and, for a local cluster, its largest worker separately)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if status != 0:
            sys.exit(proc.stderr.read().decode())
        peak = max(usage.ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs) / 2**20
        print(f"{n:>4}x{n:<3} {wall:8.2f} {3 * n * n / wall:8.0f} {peak:9.0f} {size:9.1f}")

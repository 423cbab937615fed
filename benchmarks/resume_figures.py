"""Resume figures: a reconstruction killed (SIGKILL) half-way, then ``--resume``, against a clean run.

Run:  python benchmarks/resume_figures.py [--out DIR] [--method tie|flowtie] [--scan 64] [--tile 16]

Prints, for the same store and options: the clean run's time, how many tiles the killed run had finished,
the resumed run's time and the tiles it loaded / computed, and whether the phase is bit-identical.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

from flowtie_dask.methods import REGISTRY

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="resume_data")
parser.add_argument("--method", choices=[n for n, c in REGISTRY.items() if c.kind != "whole"], default="tie",
                    help="a tiled method of the registry (whole-scan methods have nothing to resume)")
parser.add_argument("--scan", type=int, default=64, help="scan positions per side (GaAs 2×2 cells)")
parser.add_argument("--tile", type=int, default=16)
parser.add_argument("--kill-after", type=float, default=0.5, help="fraction of the tiles finished before SIGKILL")
args = parser.parse_args()
KIND = REGISTRY[args.method].kind
FIELD = KIND == "field"

env = {**os.environ, "CUPY_PYLOPS": "0"}
cli = [sys.executable, "-m", "flowtie_dask.cli.main"]
os.makedirs(args.out, exist_ok=True)
store = os.path.join(args.out, f"gaas_{args.scan}.zarr")
if not os.path.exists(store):
    subprocess.run([*cli, "simulate", "GaAs", "--lateral-cells", "2", "--scan-pixels", str(args.scan),
                    "--no-progress", "--out", store], check=True, env=env, capture_output=True)
common = [*cli, "reconstruct", store, "--method", args.method, "--tile-size", str(args.tile), "--halo", "8",
          "--no-progress", "--overwrite", *(["--keep-fields"] if FIELD else [])]
clean, res = os.path.join(args.out, "clean.zarr"), os.path.join(args.out, "resumed.zarr")
cache = os.path.join(args.out, ".resumed.zarr.resume")
shutil.rmtree(cache, ignore_errors=True)

t0 = time.perf_counter()
subprocess.run([*common, "--out", clean], check=True, env=env, capture_output=True)
t_clean = time.perf_counter() - t0

n_tiles = (-(-args.scan // args.tile)) ** 2
target = max(1, int(args.kill_after * n_tiles))
prefix = {"field": "field-", "reduce": "reduce-"}.get(KIND, "tile-")  # field methods: fields come first
p = subprocess.Popen([*common, "--out", res], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
t0 = time.perf_counter()
while True:
    done = (sum(f.startswith(prefix) and f.endswith(".npz") for f in os.listdir(cache))
            if os.path.isdir(cache) else 0)  # finished pieces only, not the temporary file of one being written
    if done >= target or p.poll() is not None:
        break
    time.sleep(0.02)
p.send_signal(signal.SIGKILL)
p.wait()
t_killed = time.perf_counter() - t0
kept = sorted(f for f in os.listdir(cache) if f.endswith(".npz")) if os.path.isdir(cache) else []

t0 = time.perf_counter()
r = subprocess.run([*common, "--out", res, "--resume"], env=env, capture_output=True, text=True)
t_resume = time.perf_counter() - t0
assert r.returncode == 0, r.stderr
if not os.path.isdir(cache) and not kept:
    sys.exit("the run finished before it could be killed: use a bigger --scan or a smaller --tile")

import zarr  # noqa: E402

a = zarr.open_group(clean, mode="r")
b = zarr.open_group(res, mode="r")
same = np.array_equal(a["phase"][:], b["phase"][:])
print(f"method {args.method}, {args.scan}×{args.scan} scan, {n_tiles} tiles of {args.tile}², 2-core CPU")
print(f"clean run                      {t_clean:7.1f} s")
print(f"killed after                   {t_killed:7.1f} s with {len(kept)} pieces kept "
      f"({sum(not k.startswith('field-') for k in kept)} tile partials, "
      f"{sum(k.startswith('field-') for k in kept)} fields)")
print(f"resumed run                    {t_resume:7.1f} s  ({t_resume / t_clean:.2f}× the clean run): "
      f"{b.attrs['tiles_reused']} tiles loaded, {b.attrs['tiles_computed']} computed"
      + (f", {b.attrs['fields_reused']} fields loaded" if b.attrs.get("fields_reused") is not None else ""))
print(f"phase bit-identical to the clean run: {same}")

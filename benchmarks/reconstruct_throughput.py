"""Throughput of every registered method against the I/O floor, on scans of 64², 128² and 256² positions ×
64² detector, with 1 and 2 worker processes (or on GPUs with dask-cuda), in one run; LiberTEM's centre of
mass on the same store as the peer.

Run:  python benchmarks/reconstruct_throughput.py [--sizes 64 128 256] [--workers 1 2] [--methods all]
          [--layout default] [--libertem-python /path/to/venv/bin/python] [--plot throughput.png]
          [--gpus 1] [--scratch auto|memory|DIR] [--tile-size 64|auto]

Printed per (scan size, workers, method): wall seconds, scan positions per second, MB/s of stored intensity
read (uncompressed, the three scans), the ratio to the floor's positions/s, peak RSS of the busiest worker
and the phase MSE against the truth.

* The floor, measured in the same run on the same cluster: every 64×64-position tile of the scan (no halo) read
  once (three scans, decompress + CRC + value checks) plus one batched FFT over its detector axes and two
  over its scan axes (``benchmarks/floor.py``), as one Dask task per tile. iCoM reads only the focus scan, so
  its floor is a third of that.
* The methods run through ``flowtie_dask.runner.reconstruct`` on 64×64 tiles with a 16-position halo (the
  runner's choice for big scans); whole-scan methods (gradient descent) only on the smallest scan.
* Each (workers, method) gets a fresh local cluster, so a worker's peak RSS (sampled every 50 ms) is that
  method's; an untimed
  warm-up run on the 64² scan first (imports, the model, the page cache), so the figures are throughput,
  not start-up. Whole-scan methods run once, cold (one task on one worker).
* The scans: GaAs 2×2 cells, 5.7 Å, at the paper's sampling, simulated once (64×64 positions) and repeated
  R×R times (periodic data, so the repeated store is an exact scan of an R-times wider supercell). R = 4
  gives 256×256 positions, 3.2 GB of float32 patterns. ``--layout`` rewrites them with
  ``flowtie_dask.store.rechunk_store`` (e.g. ``fast``) before measuring.
* LiberTEM (not a dependency; give a scratch venv's python with ``libertem`` installed): its ``CoMUDF`` on the
  focus scan of the same store, read through ``da.from_zarr`` into a ``DaskDataSet`` (LiberTEM has no Zarr
  reader), with the same number of worker processes.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from flowtie_dask.cluster import cluster_client, compute
from flowtie_dask.evaluate import evaluate_result
from flowtie_dask.methods import REGISTRY, get_method
from flowtie_dask.runner import reconstruct
from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store
from flowtie_dask.store import StoreHandle, open_scan_store, write_scan_store, write_truth

from floor import floor_block  # benchmarks/floor.py, next to this script

TILE, HALO = 64, 16


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


def tiled_gaas_store(out: str, size: int, layout: str = "default") -> str:
    """The benchmark scan of ``size``×``size`` positions in ``out`` (made once, then reused)."""
    os.makedirs(out, exist_ok=True)
    base = os.path.join(out, "gaas_64.zarr")
    if not os.path.exists(base):
        simulate_to_store(SimulationParameters(material="GaAs", lateral_cells=2, scan_pixels=64, detector_pixels=64,
                                               device="auto"), base, progress=False)
    big = os.path.join(out, f"gaas_{size}.zarr")
    if size % 64:
        raise SystemExit(f"--sizes: {size} is not a multiple of 64")
    if not os.path.exists(big):
        t0 = time.perf_counter()
        repeated_store(base, big, size // 64)
        print(f"wrote {big} in {time.perf_counter() - t0:.1f} s", flush=True)
    if layout == "default":
        return big
    from flowtie_dask.store import rechunk_store

    dst = os.path.join(out, f"gaas_{size}_{layout}.zarr")
    if not os.path.exists(dst):
        t0 = time.perf_counter()
        rechunk_store(big, dst, layout=layout, progress=False)
        print(f"rewrote {dst} ({layout}) in {time.perf_counter() - t0:.1f} s", flush=True)
    return dst


def _start_rss_sampler(dask_worker, interval: float = 0.05) -> None:
    """In a worker: sample this process's RSS every ``interval`` s in a thread, keeping the largest
    (``ru_maxrss`` is no use here: a worker process inherits its parent's high-water mark)."""
    import threading

    import psutil

    proc = psutil.Process()
    state = {"peak": proc.memory_info().rss, "run": True}

    def loop():
        while state["run"]:
            state["peak"] = max(state["peak"], proc.memory_info().rss)
            time.sleep(interval)

    threading.Thread(target=loop, daemon=True).start()
    dask_worker.flowtie_rss = state  # kept on the worker: this function arrives pickled by value


def _peak_rss_mb(dask_worker) -> float:
    state = getattr(dask_worker, "flowtie_rss", None)
    return state["peak"] / 2**20 if state else float("nan")


def _floor_task(handle, xs, ys):
    return floor_block(handle, xs, ys)


def floor_seconds(path: str, client) -> float:
    """Wall seconds of the floor over all tiles of the scan, on ``client`` (one task per 64×64 tile)."""
    import dask

    handle = StoreHandle(path)
    rx, ry = handle.geometry().scan_shape
    import uuid

    task = dask.delayed(_floor_task, pure=False)
    run = uuid.uuid4().hex[:12]  # fresh keys per call (a finished call's keys are being released)
    parts = [task(handle, list(range(x, min(x + TILE, rx))), list(range(y, min(y + TILE, ry))),
                  dask_key_name=f"floor-tile-{x}-{y}-{run}") for x in range(0, rx, TILE) for y in range(0, ry, TILE)]
    t0 = time.perf_counter()
    compute(*parts, client=client, progress=False)
    return time.perf_counter() - t0


def libertem_com(python: str, path: str, workers: int) -> dict:
    """LiberTEM's CoMUDF on the focus scan of ``path`` in a subprocess of ``python``: frames/s and seconds."""
    script = r"""
import json, sys, time
import dask.array as da
from libertem.api import Context
from libertem.executor.dask import DaskJobExecutor, cluster_spec
from libertem.io.dataset.dask import DaskDataSet
from libertem.udf.com import CoMUDF
path, workers = sys.argv[1], int(sys.argv[2])
arr = da.from_zarr(path + "/intensity")[1]
rx, ry, qx, qy = arr.shape
spec = cluster_spec(cpus=range(workers), cudas=[], has_cupy=False)
with DaskJobExecutor.make_local(spec=spec) as ex:
    ctx = Context(executor=ex)
    ds = ctx.load("dask", arr, sig_dims=2)
    udf = CoMUDF.with_params(cy=qx / 2, cx=qy / 2)
    ctx.run_udf(dataset=ds, udf=udf)  # warm-up: workers import and compile
    t0 = time.perf_counter()
    ctx.run_udf(dataset=ds, udf=udf)
    wall = time.perf_counter() - t0
print(json.dumps({"seconds": wall, "frames": rx * ry}))
"""
    out = subprocess.run([python, "-c", script, path, str(workers)], capture_output=True, text=True, timeout=1800)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="threads per worker")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs (dask-cuda); replaces --workers")
    parser.add_argument("--methods", nargs="+", default=["all"])
    parser.add_argument("--layout", default="default", help="store layout (flowtie_dask.store.LAYOUTS)")
    parser.add_argument("--scratch", default="auto",
                        help="global path's hand-over: auto, memory, or a folder for its files (runner.reconstruct)")
    parser.add_argument("--tile-size", default="64",
                        help="scan positions per tile, or 'auto' (the runner's choice by bytes; the halo given then "
                             "is at least the method's)")
    parser.add_argument("--libertem-python", default=None)
    parser.add_argument("--plot", default="throughput.png")
    parser.add_argument("--json", default=None, help="also write the rows as JSON")
    parser.add_argument("--out", default="throughput_data")
    parser.add_argument("--replot", default=None, metavar="JSON", help="only draw --plot from the rows of a --json")
    args = parser.parse_args()
    if args.replot:
        with open(args.replot) as f:
            plot(json.load(f), args.plot)
        return 0
    methods = list(REGISTRY) if args.methods == ["all"] else args.methods
    tile = args.tile_size if args.tile_size == "auto" else int(args.tile_size)
    scratch = None if args.scratch == "memory" else args.scratch
    counts = [args.gpus] if args.gpus else args.workers
    print(f"load average before: {os.getloadavg()[0]:.2f}; cores: {os.cpu_count()}; layout {args.layout}")
    print(f"{'scan':>5s} {'workers':>7s} {'method':9s} {'wall s':>7s} {'pos/s':>8s} {'MB/s':>7s} {'×floor':>7s} "
          f"{'RSS MB':>7s} {'MSE rad²':>9s}")
    rows = []
    for size in args.sizes:
        path = tiled_gaas_store(args.out, size, args.layout)
        st = open_scan_store(path)
        n = size * size
        mbytes = 3 * n * int(np.prod(st.detector_shape)) * 4 / 1e6

        def row(**r):
            rows.append(r)
            ratio = f"{r['pos_s'] / r['floor_pos_s']:7.2f}" if r.get("floor_pos_s") else f"{'':7s}"
            rss = f"{r['rss_mb']:7.0f}" if r.get("rss_mb") else f"{'':7s}"
            mse = f"{r['mse']:9.5f}" if r.get("mse") is not None else ""
            print(f"{size:5d} {r['workers']:7d} {r['method']:9s} {r['wall']:7.2f} {r['pos_s']:8.0f} "
                  f"{r['mb_s']:7.0f} {ratio} {rss} {mse}", flush=True)

        for w in counts:
            kw = dict(gpus=w) if args.gpus else dict(workers=w)
            with cluster_client(threads=args.threads, dashboard=None, announce=None, **kw) as client:
                client.run(_start_rss_sampler)
                floor_seconds(path, client)  # warm-up: page cache, imports on the workers
                fl = min(floor_seconds(path, client) for _ in range(2))
                rss = max(client.run(_peak_rss_mb).values())
            floor_pos = n / fl
            row(size=size, workers=w, method="floor", wall=fl, pos_s=floor_pos, mb_s=mbytes / fl, floor_pos_s=floor_pos,
                rss_mb=rss)
            for name in methods:
                method = get_method(name)
                if method.kind == "whole" and (size != min(args.sizes) or w != counts[0]):
                    continue  # one task on one worker: neither tiles nor workers change it
                with cluster_client(threads=args.threads, dashboard=None, announce=None, **kw) as client:
                    client.run(_start_rss_sampler)
                    if method.kind != "whole":  # warm-up on the 64² scan: imports, model, page cache
                        reconstruct(os.path.join(args.out, "gaas_64.zarr"), method, tile_size=tile, halo=HALO,
                                    client=client, progress=False, device="gpu" if args.gpus else "cpu")
                    t0 = time.perf_counter()
                    res = reconstruct(path, method, tile_size=tile, halo=HALO, client=client, progress=False,
                                      device="gpu" if args.gpus else "cpu", scratch=scratch)
                    wall = time.perf_counter() - t0
                    rss = max(client.run(_peak_rss_mb).values())
                reads = 1 / 3 if name == "icom" else 1.0
                row(size=size, workers=w, method=name, wall=wall, pos_s=n / wall, mb_s=reads * mbytes / wall,
                    floor_pos_s=floor_pos / reads, rss_mb=rss, mse=evaluate_result(res, path)["mse"])
            if args.libertem_python and not args.gpus:
                lt = libertem_com(args.libertem_python, path, w)
                if "error" in lt:
                    print(f"{size:5d} {w:7d} LiberTEM CoM failed: {lt['error']}")
                else:
                    row(size=size, workers=w, method="libertem", wall=lt["seconds"], pos_s=lt["frames"] / lt["seconds"],
                        mb_s=mbytes / 3 / lt["seconds"], floor_pos_s=3 * floor_pos)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.plot:
        plot(rows, args.plot)
        print(f"plot: {args.plot}")


def plot(rows, path):
    """Positions/s against scan size, one line per method and worker count (floor dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    series = sorted({(r["method"], r["workers"]) for r in rows})
    colour = {m: f"C{i}" for i, m in enumerate(sorted({m for m, _ in series}))}
    for ax, metric, label in ((axes[0], "pos_s", "scan positions / s"), (axes[1], "ratio", "fraction of the floor")):
        for (method, w) in series:
            pts = sorted((r["size"], r["pos_s"] if metric == "pos_s" else r["pos_s"] / r["floor_pos_s"])
                         for r in rows if r["method"] == method and r["workers"] == w and r.get("floor_pos_s"))
            if not pts or (metric == "ratio" and method == "floor"):
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ("--" if method == "floor" else "-") + "os^v"[w % 4],
                    color=colour[method], alpha=1.0 if w == 1 else 0.6, label=f"{method} ×{w}", ms=4)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("scan side (positions), 64×64 detector")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=7, ncol=2)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle("flowtie-dask throughput (64×64 tiles, halo 16; ×N = worker processes)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())

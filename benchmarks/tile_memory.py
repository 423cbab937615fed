"""Peak worker memory against the detector size: tiles sized by bytes ("auto") against fixed 64×64-position
tiles (the default before), TIE and iCoM on 2 worker processes.

Run:  python benchmarks/tile_memory.py [--out tile_memory_data] [--workers 2] [--methods tie icom] [--repeat 2]

The scans: GaAs 2×2 cells, 5.7 Å, 64×64 positions × 64×64 detector at the paper's sampling (as
``reconstruct_throughput.py``), repeated over the scan and with each detector pixel split into f×f pixels of
1/f the sampling (the same angles, f² the bytes): 128² positions × 64² pixels (f = 1, 0.8 GB of float32),
128² × 128² (f = 2, 3.2 GB) and 64² × 256² (f = 4, 3.2 GB). Each reconstruction gets a fresh local cluster whose
workers sample their RSS every 50 ms; the tilings alternate, each run --repeat times (the first run on a store is
slower, whatever its tiling); printed: tile chosen, the best wall seconds, MB/s of float32 patterns, the busiest
worker's peak RSS, and the phase MSE against the truth (the same whatever the tiling: TIE's global path is exact).
"""

import argparse
import os
import sys
import time

import numpy as np

from flowtie_dask.cluster import cluster_client
from flowtie_dask.evaluate import evaluate_result
from flowtie_dask.methods import get_method
from flowtie_dask.runner import reconstruct
from flowtie_dask.store import open_scan_store, write_scan_store, write_truth

from reconstruct_throughput import _peak_rss_mb, _start_rss_sampler, tiled_gaas_store


def finer_detector_store(src: str, dst: str, repeat: int, split: int) -> str:
    """``src`` repeated ``repeat``×``repeat`` over the scan, each detector pixel split into ``split``² pixels."""
    st = open_scan_store(src)
    rx, ry = st.scan_shape
    qx, qy = st.detector_shape
    (cx, cy), (sx, sy) = st.metadata.detector_center, st.metadata.detector_sampling
    meta = st.metadata.replace(detector_sampling=(sx / split, sy / split),
                               detector_center=((cx + 0.5) * split - 0.5, (cy + 0.5) * split - 0.5))
    truth = np.asarray(st.truth["projected_phase"])
    with write_scan_store(dst, meta, scan_shape=(rx * repeat, ry * repeat),
                          detector_shape=(qx * split, qy * split), overwrite=True) as g:
        for d in range(3):
            for x0 in range(0, rx, 8):
                rows = np.asarray(st.intensity[d, x0:x0 + 8])
                fine = np.repeat(np.repeat(rows, split, axis=-2), split, axis=-1) / split ** 2
                for i in range(repeat):
                    for j in range(repeat):
                        g["intensity"][d, i * rx + x0:i * rx + x0 + len(rows), j * ry:(j + 1) * ry] = fine
        pattrs = st.truth["projected_phase"].attrs
        write_truth(g, np.tile(truth, (repeat, repeat)), pixel_size=tuple(pattrs["pixel_size_A"]),
                    origin=tuple(pattrs["origin_A"]), attrs=dict(st.truth.attrs))
    return dst


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="tile_memory_data")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=["tie", "icom"])
    parser.add_argument("--repeat", type=int, default=2, help="runs of each tiling (the best wall time is printed)")
    args = parser.parse_args()
    tiled_gaas_store(args.out, 64)
    base = os.path.join(args.out, "gaas_64.zarr")
    cases = [(2, 1), (2, 2), (1, 4)]  # (repeat over the scan, detector split)
    print(f"{'scan':>9s} {'detector':>9s} {'method':7s} {'tiles':>7s} {'wall s':>7s} {'MB/s':>6s} {'RSS MB':>7s} "
          f"{'MSE rad²':>9s}")
    for repeat, split in cases:
        path = os.path.join(args.out, f"gaas_r{repeat}_q{split}.zarr")
        if not os.path.exists(path):
            t0 = time.perf_counter()
            finer_detector_store(base, path, repeat, split)
            print(f"wrote {path} in {time.perf_counter() - t0:.1f} s", flush=True)
        os.sync()  # the store's pages written back before timing (else the first run pays for the writeback)
        st = open_scan_store(path)
        for d in range(3):  # and in the page cache, as for every run after the first
            for x0 in range(0, st.scan_shape[0], 16):
                np.asarray(st.intensity[d, x0:x0 + 16])
        mbytes = 3 * int(np.prod(st.scan_shape)) * int(np.prod(st.detector_shape)) * 4 / 1e6
        for name in args.methods:
            runs = {}
            for tile in (64, "auto") * args.repeat:  # alternated: the first run on a store is slower whatever it is
                with cluster_client(workers=args.workers, threads=1, dashboard=None, announce=None) as client:
                    client.run(_start_rss_sampler)
                    t0 = time.perf_counter()
                    res = reconstruct(path, get_method(name), tile_size=tile, client=client, progress=False)
                    wall = time.perf_counter() - t0
                    rss = max(client.run(_peak_rss_mb).values())
                best = runs.get(tile)
                runs[tile] = (min(wall, best[0]) if best else wall, max(rss, best[1]) if best else rss, res)
            for tile in ("auto", 64):
                wall, rss, res = runs[tile]
                reads = 1 / 3 if name == "icom" else 1.0
                side = res.attrs["tile_size"][0] if res.attrs["tile_size"] else "whole"
                label = f"{side}" + (" auto" if tile == "auto" else "")
                scan = "×".join(map(str, st.scan_shape))
                det = "×".join(map(str, st.detector_shape))
                print(f"{scan:>9s} {det:>9s} {name:7s} {label:>7s} {wall:7.1f} {reads * mbytes / wall:6.0f} "
                      f"{rss:7.0f} {evaluate_result(res, path)['mse']:9.5f}", flush=True)
                if tile == "auto" and res.attrs.get("tile_reason"):
                    print(f"    {res.attrs['tile_reason']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

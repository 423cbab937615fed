"""Peak memory and throughput of ``flowtie-dask import`` streaming HDF5 camera frames into a scan store.

Run:  python benchmarks/import_rss.py [--gb 2] [--gb 0.25 2] [--detector 256] [--threads N] [--dir /tmp] [--keep]

For each size: one HDF5 frame stack of about GB gigabytes (uint16 frames DET×DET, one chunk per frame,
bitshuffle-LZ4 as counting cameras write them; Poisson counts: a bright-field disk of ~20 counts per pixel on a
dark field of ~0.05, so the compression is a counting camera's) is written to a temporary folder and imported
three times over (``import F F F``: the minus, focus and plus scans) in a subprocess. Printed: the file and pattern
sizes, wall time, MB/s of files read and of patterns written, the store's size on disk, and the subprocess's peak
RSS (``ru_maxrss`` of the subprocess from ``os.wait4``, cross-checked by polling /proc with psutil). The goal is a peak RSS
under 1 GB, independent of the scan's size (compare two sizes with ``--gb 0.25 2``). Files are deleted afterwards.
"""

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np


def write_frames(path: str, n_frames: int, det: int, seed: int = 0) -> None:
    """A bitshuffle-LZ4 HDF5 frame stack ``entry/data/data`` of ``n_frames`` Poisson frames (a pool of 256
    distinct frames, cycled: each frame is its own chunk, so the compression is that of fresh Poisson frames)."""
    import h5py
    import hdf5plugin

    rng = np.random.default_rng(seed)
    q = np.hypot(*np.meshgrid(np.arange(det) - det // 2, np.arange(det) - det // 2, indexing="ij"))
    mean = np.where(q < det / 6, 20.0, 0.05)
    pool = rng.poisson(mean, size=(256, det, det)).astype(np.uint16)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("entry/data/data", shape=(n_frames, det, det), dtype=np.uint16, chunks=(1, det, det),
                             **hdf5plugin.Bitshuffle(cname="lz4"))
        for k0 in range(0, n_frames, 256):
            k1 = min(k0 + 256, n_frames)
            d[k0:k1] = pool[: k1 - k0]


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def run_import(frames: str, side: int, out: str, threads: int | None) -> dict:
    import psutil

    cmd = [sys.executable, "-m", "flowtie_dask.cli.main", "import", frames, frames, frames, "--scan-shape", str(side),
           str(side), "--energy", "300000", "--semiangle", "20", "--defocus", "-20", "0", "20", "--scan-step", "0.2",
           "--detector-sampling", "0.02", "--out", out, "--no-progress"]
    if threads:
        cmd += ["--threads", str(threads)]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "CUPY_PYLOPS": "0"})
        watch, polled = psutil.Process(proc.pid), 0
        while True:  # wait4 gives this child's own rusage (its peak RSS), whatever ran before it
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                polled = max(polled, watch.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.1)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        text = log.read().strip()
    if proc.returncode:
        raise SystemExit(f"import failed ({proc.returncode}): {text}")
    wrote = [line for line in text.splitlines() if line.startswith("wrote ")]
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024, "polled_rss_mib": polled / 2**20,
            "stderr": wrote}


def check_store(out: str, frames: str, side: int) -> None:
    """The store holds the frames: shape, uint16, and one block compared with the file."""
    import h5py
    import hdf5plugin  # noqa: F401

    from flowtie_dask.store import open_scan_store

    st = open_scan_store(out)
    assert st.intensity.dtype == np.uint16, st.intensity.dtype
    assert st.intensity.shape[1:3] == (side, side), st.intensity.shape
    with h5py.File(frames) as f:
        want = f["entry/data/data"][side:2 * side].reshape((1, side) + f["entry/data/data"].shape[1:])
    np.testing.assert_array_equal(st.intensity[2, 1:2], want)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, nargs="+", default=[2.0], help="size of the frame stack(s) in GB")
    parser.add_argument("--detector", type=int, default=256, help="detector pixels per side")
    parser.add_argument("--threads", type=int, default=None, help="Dask threads of the import (default: all cores)")
    parser.add_argument("--dir", default=None, help="where the temporary files go (default: the system's)")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    args = parser.parse_args()
    frame_bytes = args.detector ** 2 * 2
    work = tempfile.mkdtemp(prefix="import_rss_", dir=args.dir)
    try:
        print(f"{'GB':>5} {'scan':>9} {'file MB':>8} {'patterns MB':>11} {'store MB':>9} {'s':>6} {'MB/s file':>9} "
              f"{'MB/s patt':>9} {'peak RSS MiB':>12} {'polled MiB':>10}")
        for gb in args.gb:
            side = int(math.sqrt(gb * 1e9 / frame_bytes))
            frames = os.path.join(work, f"frames_{gb:g}.h5")
            out = os.path.join(work, f"store_{gb:g}.zarr")
            t0 = time.perf_counter()
            write_frames(frames, side * side, args.detector)
            written = time.perf_counter() - t0
            r = run_import(frames, side, out, args.threads)
            check_store(out, frames, side)
            file_mb = 3 * os.path.getsize(frames) / 1e6
            patt_mb = 3 * side * side * frame_bytes / 1e6
            print(f"{gb:5g} {side:>4}×{side:<4} {file_mb:8.0f} {patt_mb:11.0f} {folder_bytes(out) / 1e6:9.0f} "
                  f"{r['seconds']:6.1f} {file_mb / r['seconds']:9.0f} {patt_mb / r['seconds']:9.0f} "
                  f"{r['peak_rss_mib']:12.0f} {r['polled_rss_mib']:10.0f}   (frames written in {written:.0f} s; "
                  f"{r['stderr'][0] if r['stderr'] else ''})", flush=True)
            if not args.keep:
                os.remove(frames)
                shutil.rmtree(out)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

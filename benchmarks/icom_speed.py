"""Does iCoM run at the speed of reading the data? One run measures, on the same store:

* the floor: reading the scans iCoM needs once, tile by tile, through the store's checked reader
  (``StoreHandle.read_block``: decompress + CRC check), in one thread and on Dask threads;
* ``--method icom`` through the runner (inline, and on Dask threads), and TIE for scale.

Run:  python benchmarks/icom_speed.py [--repeat 2] [--tile 64] [--out icom_speed_data]

The scan: GaAs 2×2 cells at the paper's sampling (64×64 positions, 64×64 detector), repeated R×R times over
the scan (an exact scan of an R-times wider periodic supercell), as in ``reconstruct_throughput.py``.
Prints positions/s, MB/s of stored data read and the ratio to the floor.
"""

import argparse
import time

from reconstruct_throughput import tiled_gaas_store

from flowtie_dask.cluster import compute
from flowtie_dask.methods import get_method
from flowtie_dask.runner import reconstruct
from flowtie_dask.runner.tiles import plan_tiles
from flowtie_dask.store import StoreHandle, open_scan_store


def read_all(handle, tiles, defocus):
    """Read every tile interior of the given scans once; returns the bytes read."""
    n = 0
    for t in tiles:
        n += handle.read_block(list(t.xs), list(t.ys), defocus=defocus).nbytes
    return n


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="R: the scan is R·64 positions per side")
    parser.add_argument("--tile", type=int, default=64, help="scan positions per tile side")
    parser.add_argument("--out", default="icom_speed_data", help="folder of the scans (made once, then reused)")
    parser.add_argument("--best-of", type=int, default=3, help="each figure is the fastest of this many runs")
    args = parser.parse_args()
    path = tiled_gaas_store(args.out, args.repeat)
    st = open_scan_store(path)
    handle = StoreHandle(path)
    n_pos = st.scan_shape[0] * st.scan_shape[1]
    tiles = plan_tiles(st.scan_shape, (args.tile, args.tile), 0, periodic=True)
    focus = get_method("icom").needs(handle.geometry()).defocus
    rows = []

    def row(label, seconds, nbytes, floor=None):
        rows.append((label, seconds, nbytes))
        ratio = "" if floor is None else f"{floor / seconds:6.2f}"
        print(f"{label:34s} {seconds:7.2f} s {n_pos / seconds:9.0f} pos/s {nbytes / seconds / 1e6:7.0f} MB/s {ratio}",
              flush=True)

    print(f"scan {st.scan_shape[0]}×{st.scan_shape[1]}, detector {st.detector_shape}, {len(tiles)} tiles; "
          f"iCoM reads scans {focus}; last column: floor time / time (1 = at the floor)")
    def best(fn):
        times = []
        for _ in range(args.best_of):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    import dask

    nbytes = read_all(handle, tiles, focus)  # also warms the page cache and the codec
    floor1 = best(lambda: read_all(handle, tiles, focus))
    row("floor: read focus, 1 thread", floor1, nbytes)
    floor_t = best(lambda: compute(*[dask.delayed(read_all)(handle, [t], focus) for t in tiles], client=None,
                                   progress=False))
    row("floor: read focus, Dask threads", floor_t, nbytes)
    for client, label, floor in (("inline", "inline", floor1), (None, "Dask threads", floor_t)):
        seconds = best(lambda: reconstruct(path, get_method("icom"), tile_size=args.tile, client=client,
                                           progress=False))
        row(f"icom, {label}", seconds, nbytes, floor)
    t0 = time.perf_counter()
    reconstruct(path, get_method("tie"), tile_size=args.tile, halo=16, client=None, progress=False)
    row("tie (3 scans, halo 16), Dask threads, once", time.perf_counter() - t0, 3 * nbytes, floor_t)

if __name__ == "__main__":
    main()

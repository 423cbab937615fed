"""Decoding cost of the store's codec and chunk layout: what reading costs before any reconstruction starts.

For float32 patterns (a noise-free simulation) and uint16 counts (the same patterns with Poisson noise at
--electrons per pattern), each candidate codec is written to a Zarr array of the store's shape with the
chunking given, then the whole array is read back (zarr's own async reading, all cores) and each chunk is
decoded alone on one thread. Printed: compressed size ratio, µs per 64×64 frame decoded on one thread, and
GB/s of the whole-array read (uncompressed bytes), with a plain memory copy as the floor.

Run:  python benchmarks/store_codecs.py [--store S.zarr] [--chunk 16 16] [--shard 64 64] [--electrons 1e4]
"""

import argparse
import os
import shutil
import tempfile
import time

import numpy as np


def codecs():
    from zarr.codecs import BloscCodec, BloscShuffle, Crc32cCodec

    bit, byte = BloscShuffle.bitshuffle, BloscShuffle.shuffle
    return {
        "zstd-3 bitshuffle (now)": [BloscCodec(cname="zstd", clevel=3, shuffle=bit), Crc32cCodec()],
        "zstd-1 bitshuffle": [BloscCodec(cname="zstd", clevel=1, shuffle=bit), Crc32cCodec()],
        "lz4-5 bitshuffle": [BloscCodec(cname="lz4", clevel=5, shuffle=bit), Crc32cCodec()],
        "lz4-5 byteshuffle": [BloscCodec(cname="lz4", clevel=5, shuffle=byte), Crc32cCodec()],
        "lz4-1 bitshuffle": [BloscCodec(cname="lz4", clevel=1, shuffle=bit), Crc32cCodec()],
        "uncompressed + crc": [Crc32cCodec()],
    }


def best_of(fn, n=3):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(data: np.ndarray, chunk, shard, tmp: str, label: str):
    import zarr

    frames = int(np.prod(data.shape[:-2]))
    fbytes = data[..., :, :].itemsize * data.shape[-1] * data.shape[-2]
    copy = best_of(lambda: np.array(data, copy=True))
    print(f"\n{label}: {data.shape} {data.dtype}, {data.nbytes / 1e6:.0f} MB; chunk {chunk}, shard {shard}; "
          f"memory copy {data.nbytes / copy / 1e9:.2f} GB/s")
    print(f"{'codec':26s} {'ratio':>6s} {'µs/frame 1 thread':>18s} {'read GB/s':>10s} {'× copy time':>11s}")
    for name, comps in codecs().items():
        path = os.path.join(tmp, "a.zarr")
        shutil.rmtree(path, ignore_errors=True)
        chunks = (1, *chunk, *data.shape[-2:])
        shards = (1, *shard, *data.shape[-2:]) if shard else None
        a = zarr.create_array(path, shape=data.shape, dtype=data.dtype, chunks=chunks, shards=shards,
                              compressors=comps, fill_value=0)
        a[...] = data
        stored = a.nbytes_stored()
        read = best_of(lambda: a[...])
        # one chunk's bytes decoded alone on this thread (the cost a worker thread pays per chunk)
        import numcodecs

        numcodecs.blosc.set_nthreads(1)
        block = np.ascontiguousarray(data[(0,) + tuple(slice(0, c) for c in chunk)])
        blosc = [c for c in comps if type(c).__name__ == "BloscCodec"]
        if blosc:
            b = blosc[0]
            shuffle = {"bitshuffle": numcodecs.Blosc.BITSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE}[b.shuffle.value]
            nc = numcodecs.Blosc(cname=b.cname.value, clevel=b.clevel, shuffle=shuffle)
            enc = nc.encode(block)
            t = best_of(lambda: nc.decode(enc), n=5)
        else:
            t = best_of(lambda: np.frombuffer(block.tobytes(), block.dtype), n=5)
        per_frame = t / (block.size * block.itemsize / fbytes) * 1e6
        print(f"{name:26s} {data.nbytes / stored:6.1f} {per_frame:18.1f} {data.nbytes / read / 1e9:10.2f} "
              f"{read / copy:11.1f}", flush=True)
    del frames


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", default=None, help="a scan store (default: GaAs 64×64 simulated here)")
    parser.add_argument("--chunk", type=int, nargs=2, default=(16, 16))
    parser.add_argument("--shard", type=int, nargs=2, default=None)
    parser.add_argument("--electrons", type=float, default=1e4)
    args = parser.parse_args()
    from flowtie_dask.store import open_scan_store

    tmp = tempfile.mkdtemp(prefix="codecs-")
    try:
        path = args.store
        if path is None:
            from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store

            path = os.path.join(tmp, "gaas.zarr")
            simulate_to_store(SimulationParameters(material="GaAs", lateral_cells=2, scan_pixels=64,
                                                   detector_pixels=64), path, progress=False)
        st = open_scan_store(path)
        data = np.asarray(st.intensity[...])
        if data.dtype == np.float32:
            measure(data, args.chunk, args.shard, tmp, "float32 patterns")
            rng = np.random.default_rng(0)
            counts = rng.poisson(data * (args.electrons / data[0].sum(axis=(-2, -1)).mean()))
            measure(counts.astype(np.uint16), args.chunk, args.shard, tmp,
                    f"uint16 counts ({args.electrons:.0e} e⁻/pattern)")
        else:
            measure(data, args.chunk, args.shard, tmp, f"{data.dtype} counts")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

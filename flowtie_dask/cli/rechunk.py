"""``flowtie-dask rechunk STORE --out NEW``: rewrite a scan store in a read-optimised layout."""

from __future__ import annotations

import argparse

from ..atomic import check_output
from ..cluster import cluster_client
from ..store import LAYOUTS, rechunk_store
from .options import add_cluster_options, add_command, cluster_kwargs, pair, positive_int


def add_parser(sub) -> None:
    """Register the ``rechunk`` sub-command."""
    p = add_command(sub, "rechunk", run, help="rewrite a scan store with another codec, chunking or sharding",
                    description="""
                        Copy a scan store into a new one with the same values, metadata, calibration and truth,
                        in another layout: 'fast' (Blosc LZ4 with byte shuffle, 4-6x faster to decode than the
                        default Zstd, and sharded in 128x128 scan positions, so a big scan is a few hundred
                        files) or 'default'. Counts stay counts. The source is only read; the new store appears
                        only when complete.
                        """)
    p.add_argument("store", metavar="STORE", help="scan store (*.zarr)")
    p.add_argument("--out", required=True, metavar="NEW", help="the new store (*.zarr)")
    p.add_argument("--layout", choices=tuple(LAYOUTS), default="fast", help="codec and sharding (default: fast)")
    p.add_argument("--chunk", type=positive_int, nargs="+", default=None, metavar="N",
                   help="scan positions per chunk, one or two values (default: about 4 MiB per chunk)")
    p.add_argument("--shard", type=positive_int, nargs="+", default=None, metavar="N",
                   help="scan positions per shard, multiples of the chunk (default: the layout's)")
    p.add_argument("--no-shards", action="store_true", help="one file per chunk")
    p.add_argument("--overwrite", action="store_true", help="replace an existing NEW")
    add_cluster_options(p, default_workers="0 = in-process threads")
    p.set_defaults(workers=0)


def run(args: argparse.Namespace) -> int:
    """Rewrite and print the new store's path."""
    check_output(args.out, overwrite=args.overwrite, inputs=[args.store])
    chunks = None if args.chunk is None else pair(args.chunk, option="--chunk")
    if args.no_shards and args.shard is not None:
        raise ValueError("give --shard or --no-shards, not both")
    shards = None if args.no_shards else ("layout" if args.shard is None else pair(args.shard, option="--shard"))
    with cluster_client(**cluster_kwargs(args)) as client:
        rechunk_store(args.store, args.out, layout=args.layout, chunks=chunks, shards=shards,
                      overwrite=args.overwrite, client=client, progress=not args.no_progress)
    print(args.out)
    return 0

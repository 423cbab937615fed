"""``flowtie-dask info PATH``: summarise a scan store."""

from __future__ import annotations

import argparse

from ..store import open_scan_store


def add_parser(sub) -> None:
    """Register the ``info`` sub-command."""
    p = sub.add_parser("info", help="summarise a scan store",
                       description="Validate a scan store and print its shape, chunking, compression, optics, "
                                   "defocus series, scan and detector sampling, truth and provenance.")
    p.add_argument("path", metavar="PATH", help="scan store folder (*.zarr)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the summary of ``args.path``."""
    print(open_scan_store(args.path).describe())
    return 0

"""``flowtie-dask export PATH --out OUT``: a reconstruction result or a scan store to py4DSTEM files."""

from __future__ import annotations

import argparse

from ..atomic import protect_inputs
from ..interop.py4dstem import export_result, export_store, is_scan_store
from .options import add_command


def add_parser(sub) -> None:
    """Register the ``export`` sub-command."""
    p = add_command(sub, "export", run, help="export a reconstruction result or a scan store to py4DSTEM .h5 files",
                    description="""
                        Export to py4DSTEM (EMD 1.0 .h5, read with py4DSTEM.read). A reconstruction result (a Zarr
                        group with a 2D 'phase' array in rad and a 'pixel_size_A' attribute) becomes one file
                        holding a RealSlice 'phase' calibrated in Å (and 'amplitude' in its tree when present). A
                        scan store becomes three DataCube files OUT_defocus_0.h5, OUT_defocus_1.h5,
                        OUT_defocus_2.h5, in the store's defocus order, calibrated in Å and 1/Å, with the optics in
                        a 'flowtie_dask' Metadata.
                        """)
    p.add_argument("path", metavar="PATH",
                   help="reconstruction result (Zarr group with 'phase') or scan store (*.zarr)")
    p.add_argument("--out", required=True, metavar="OUT",
                   help="output .h5 file for a result; file-name prefix for a scan store (OUT_defocus_{0,1,2}.h5)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")


def run(args: argparse.Namespace) -> int:
    """Export and print the written paths, one a line."""
    protect_inputs(args.out, [args.path])
    if is_scan_store(args.path):
        paths = export_store(args.path, args.out, overwrite=args.overwrite)
    else:
        paths = [export_result(args.path, args.out, overwrite=args.overwrite)]
    for path in paths:
        print(path)
    return 0

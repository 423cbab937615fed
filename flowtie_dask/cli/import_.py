"""``flowtie-dask import MINUS FOCUS PLUS``: three py4DSTEM files (a defocus series) into a scan store."""

from __future__ import annotations

import argparse
import sys
import time

from ..atomic import claim_output
from ..interop.microscope_log import read_microscope_log
from ..interop.py4dstem import import_files
from ..store import open_scan_store
from .options import add_command, pair, positive_float, positive_int


def add_parser(sub) -> None:
    """Register the ``import`` sub-command."""
    p = add_command(sub, "import", run, help="import a defocus series of three py4DSTEM files into a scan store",
                    description="""
                        Read three 4D-STEM scans of the same area at defocus −Δz, 0, +Δz (py4DSTEM/EMD .h5 files, or
                        any raw format py4DSTEM.import_file reads) and write them as one Zarr scan store. The scan
                        step comes from each DataCube's R calibration (Å or nm; uncalibrated pixels are refused),
                        the detector sampling from its Q calibration (1/Å, 1/nm, or mrad converted with the beam
                        energy), the detector rotation/flip from QR_rotation_degrees/QR_flip, the centre from the
                        calibrated origin. Each scan is scaled so its mean pattern sums to 1 (factors recorded in
                        the store's provenance).
                        """)
    p.add_argument("minus", metavar="MINUS", help="file of the scan at the first defocus value (−Δz)")
    p.add_argument("focus", metavar="FOCUS", help="file of the scan at the second defocus value (in focus)")
    p.add_argument("plus", metavar="PLUS", help="file of the scan at the third defocus value (+Δz)")
    p.add_argument("--meta", metavar="FILE", default=None,
                   help="microscope log (JSON or YAML, values with units: high tension, semi-angle, defocus with "
                        "its sign convention, …; see flowtie_dask.interop.microscope_log); the flags below "
                        "override it")
    p.add_argument("--defocus", type=float, nargs=3, default=None, metavar=("DF1", "DF2", "DF3"),
                   help="defocus Δf of MINUS, FOCUS, PLUS in Å, with Δf = −C10 (positive = underfocus), "
                        "e.g. --defocus -20 0 20")
    p.add_argument("--energy", type=positive_float, default=None, metavar="EV",
                   help="beam energy in eV (e.g. 300000 for 300 kV)")
    p.add_argument("--semiangle", type=positive_float, default=None, metavar="MRAD",
                   help="probe convergence semi-angle in mrad")
    p.add_argument("--out", required=True, metavar="PATH", help="output scan store folder (*.zarr)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store at --out")
    o = p.add_argument_group("optional metadata")
    o.add_argument("--aperture-edge", type=float, default=None, metavar="MRAD",
                   help="soft aperture edge width in mrad (default: the value recorded in files exported by "
                        "flowtie-dask, else 0 = hard edge)")
    o.add_argument("--cs", type=float, default=None, metavar="Å",
                   help="spherical aberration C30 in Å, 1 mm = 1e7 Å (default: recorded, else 0)")
    o.add_argument("--detector-center", type=float, nargs=2, default=None, metavar=("CX", "CY"),
                   help="detector pixel (along Qx, Qy) of the unscattered beam's centre (default: the calibrated "
                        "origin qx0_mean/qy0_mean, else Qx//2, Qy//2)")
    o.add_argument("--periodic", action="store_true", default=None,
                   help="the scan covers whole periods of a periodic specimen (default: recorded, else no)")
    o.add_argument("--intensity-scale", type=positive_float, nargs="+", default=None, metavar="S",
                   help="multiply the intensities by S (one value, or one per scan) instead of normalising each "
                        "scan's mean pattern sum to 1")
    o.add_argument("--chunk", type=positive_int, nargs="+", default=None, metavar="N",
                   help="scan positions per store chunk along Rx and Ry (one value for both; default: ~8 MiB "
                        "chunks)")


def run(args: argparse.Namespace) -> int:
    """Import the three files and print the store's summary."""
    chunks = pair(args.chunk, option="--chunk")
    if args.intensity_scale is not None and len(args.intensity_scale) not in (1, 3):
        raise ValueError(f"--intensity-scale takes one value or three (one per scan), got {args.intensity_scale}")
    log = read_microscope_log(args.meta) if args.meta is not None else None
    values = {}
    for name, flag in (("defocus", "--defocus"), ("energy", "--energy"), ("semiangle", "--semiangle")):
        values[name] = getattr(args, name) if getattr(args, name) is not None else getattr(log, name, None)
        if values[name] is None:
            raise ValueError(f"no {name}: give {flag} or a microscope log with it (--meta FILE)")
    inputs = [args.minus, args.focus, args.plus, *([args.meta] if args.meta else [])]
    start = time.perf_counter()
    with claim_output(args.out, overwrite=args.overwrite, inputs=inputs):
        path = import_files(
            args.minus, args.focus, args.plus,
            defocus=values["defocus"], energy=values["energy"], semiangle=values["semiangle"], out=args.out,
            aperture_edge=args.aperture_edge, aberrations=None if args.cs is None else {"C30": args.cs},
            detector_center=args.detector_center, chunks=chunks, overwrite=args.overwrite,
            periodic=args.periodic, intensity_scale=args.intensity_scale,
        )
    print(f"wrote {path} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(open_scan_store(path).describe())
    return 0

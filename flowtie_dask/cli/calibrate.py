"""``flowtie-dask calibrate STORE``: beam centre, scan–detector rotation/transpose and drift between scans, estimated
from the store's own data and recorded in it."""

from __future__ import annotations

import argparse
import os
import sys

from ..atomic import check_output, protect_inputs
from ..calibrate import STEPS, calibrate_store, calibration_figure, record_calibration
from .options import add_command, positive_float, positive_int


def add_parser(sub) -> None:
    """Register the ``calibrate`` sub-command."""
    p = add_command(sub, "calibrate", run, help="estimate beam centre, detector rotation and scan drift from the data",
                    description="""
                        Estimate from a scan store's own data, and record in it: the beam centre (a soft-edged disk
                        fitted to the bright-field disk of the focus scan's mean pattern; the descan, a plane
                        fitted to every pattern's centre of mass, is recorded but not applied), the scan–detector
                        rotation and transpose (the orientation that leaves the centre-of-mass field curl-free,
                        180° by the integrated phase of a positive potential), and the drift of the two defocused
                        scans against the focus scan (upsampled cross-correlation of bright-field, annular
                        dark-field and centre-of-mass virtual images, which must agree). The store's
                        detector_center, detector_rotation, detector_transpose and scan_drift are replaced in one
                        atomic update; its calibration record keeps each value with its uncertainty, method and
                        the value it replaced. The store is read by blocks of scan rows, never whole.
                        """)
    p.add_argument("store", metavar="STORE", help="scan store folder (*.zarr), updated in place")
    p.add_argument("--only", nargs="+", choices=STEPS, metavar="STEP", default=list(STEPS),
                   help=f"estimate only these ({', '.join(STEPS)}; default all)")
    p.add_argument("--figure", metavar="PATH", help="also draw what was found (PNG): the mean pattern with the "
                   "fitted disk, the centre-of-mass field before and after the rotation, the virtual images before "
                   "and after registration")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --figure file")
    p.add_argument("--dry-run", action="store_true", help="estimate and print, write nothing into the store")
    p.add_argument("--force", action="store_true",
                   help="record the estimates even when a check fails (the record says so)")
    p.add_argument("--upsample", type=positive_int, default=100, metavar="N",
                   help="upsampling of the drift's correlation peak: precision 1/N scan step (default 100)")
    p.add_argument("--tolerance", type=positive_float, default=0.25, metavar="STEPS",
                   help="scan steps by which the virtual images may disagree on the drift beyond their noise "
                        "(default 0.25)")


def _check_format(path: str) -> None:
    """Refuse a --figure whose suffix matplotlib cannot write, before anything is computed."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    kinds = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in kinds:
        raise ValueError(f"--figure {path!r}: matplotlib cannot write .{suffix} files; use one of "
                         f"{', '.join('.' + k for k in sorted(kinds))}")


def run(args: argparse.Namespace) -> int:
    """Estimate, print the summary, draw the figure, record (unless ``--dry-run``)."""
    if args.figure:
        check_output(args.figure, overwrite=args.overwrite, option="--figure")
        protect_inputs(args.figure, [args.store], option="--figure")
        _check_format(args.figure)
    cal = calibrate_store(args.store, steps=args.only, upsample=args.upsample, tolerance=args.tolerance)
    print(f"calibrate      {cal.path} ({', '.join(cal.steps)})")
    for line in cal.summary():
        print(line)
    for line in cal.warnings:
        print(f"flowtie-dask calibrate: warning: {line}", file=sys.stderr)
    if args.figure:
        print(f"figure         {calibration_figure(cal, args.figure, overwrite=args.overwrite)}")
    if args.dry_run:
        for line in cal.problems:
            print(f"flowtie-dask calibrate: warning: {line}", file=sys.stderr)
        print("written        nothing (--dry-run)")
        return 0
    if cal.problems and args.force:
        for line in cal.problems:
            print(f"flowtie-dask calibrate: warning: {line} (recorded anyway: --force)", file=sys.stderr)
    record_calibration(cal, force=args.force)
    print(f"written        {cal.path}: " + ", ".join(cal.fields()) + " (previous values kept in its calibration "
          "record)")
    return 0

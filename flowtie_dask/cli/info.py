"""``flowtie-dask info PATH [--check]``: summarise a scan store, and with ``--check`` verify every chunk."""

from __future__ import annotations

import argparse

from ..calibrate import describe_calibration
from ..geometry import ReconstructionGeometry
from ..methods import methods_for
from ..store import ScanStoreError, check_scan_store, open_scan_store


def add_parser(sub) -> None:
    """Register the ``info`` sub-command."""
    p = sub.add_parser("info", help="summarise a scan store",
                       description="Validate a scan store and print its shape, chunking, compression, optics, "
                                   "defocus series, scan and detector sampling, truth and provenance.")
    p.add_argument("path", metavar="PATH", help="scan store folder (*.zarr)")
    p.add_argument("--check", action="store_true",
                   help="also read every chunk (intensity and truth), one at a time, and list each one that is "
                        "missing, corrupt (checksum or decompression error) or holds NaN/Inf; exit 2 if any is bad")
    p.set_defaults(run=run)


def _methods_line(store) -> str:
    """``methods        tie, icom, …; not flowtie: <why>`` from the registry's own checks."""

    geometry = ReconstructionGeometry.from_metadata(store.metadata, scan_shape=store.scan_shape,
                                                    detector_shape=store.detector_shape)
    verdicts = methods_for(geometry)
    ok = [n for n, why in verdicts.items() if why is None]
    line = "methods        " + (", ".join(ok) or "none")
    for name, why in verdicts.items():
        if why is not None:
            line += f"; not {name}: {why}"
    return line


def _calibration_lines(store) -> list[str]:
    """Which calibrations the store has and where they came from (``flowtie-dask calibrate``), and its drift."""
    m = store.metadata
    record = describe_calibration(m.calibration)
    lines = ["calibration    " + (record[0] if record else "none recorded (flowtie-dask calibrate STORE estimates "
                                 "the beam centre, detector rotation and scan drift from the data)")]
    lines += ["               " + line for line in record[1:]]
    if any(v for d in m.scan_drift for v in d):
        lines.append("scan drift     " + ", ".join(f"({x:+.3f}, {y:+.3f})" for x, y in m.scan_drift)
                     + " Å against the focus scan")
    return lines


def run(args: argparse.Namespace) -> int:
    """Print the summary of ``args.path`` (and, with ``--check``, every bad chunk)."""
    if not args.check:
        store = open_scan_store(args.path)
        print(store.describe())
        print("\n".join(_calibration_lines(store)))
        print(_methods_line(store))
        return 0
    store = open_scan_store(args.path, check_chunks=False)  # --check lists missing chunks itself
    print(store.describe(), flush=True)
    print("\n".join(_calibration_lines(store)), flush=True)
    report = check_scan_store(store, on_bad=lambda bad: print(f"bad chunk  {bad}", flush=True))
    if not report.ok:
        raise ScanStoreError(report.summary())
    print(report.summary())
    return 0

"""``flowtie-dask import MINUS FOCUS PLUS``: three scans of a defocus series into a scan store.

Camera files (HDF5 frame stacks, .npy, raw binary, the formats RosettaSciIO reads lazily) are streamed block by block
on Dask threads (:func:`flowtie_dask.interop.frames.import_frames`); py4DSTEM/EMD files are read through py4DSTEM
(:func:`flowtie_dask.interop.import_files`)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from ..atomic import claim_output
from ..interop.frames import frame_format, import_frames
from ..interop.microscope_log import read_microscope_log
from ..interop.py4dstem import import_files
from ..store import open_scan_store
from .options import add_command, nonnegative_int, pair, positive_float, positive_int

_ROLES = ("MINUS", "FOCUS", "PLUS")
#: flags that only the streaming import of camera files takes (a py4DSTEM file carries its own calibration)
_CAMERA_FLAGS = (("bin", "--bin", 1), ("scan_shape", "--scan-shape", None), ("scan_step", "--scan-step", None),
                 ("detector_sampling", "--detector-sampling", None), ("dtype", "--dtype", None),
                 ("shape", "--shape", None), ("offset", "--offset", 0))


def add_parser(sub) -> None:
    """Register the ``import`` sub-command."""
    p = add_command(sub, "import", run, help="import a defocus series of three scans (camera or py4DSTEM files) into "
                                             "a scan store",
                    description="""
                        Read three 4D-STEM scans of the same area at defocus −Δz, 0, +Δz and write them as one Zarr
                        scan store. Camera files are streamed block by block on Dask threads (memory: a few chunks
                        per thread, whatever the scan's size): HDF5 frame stacks (--dataset, default entry/data/data;
                        frames in row-major scan order with --scan-shape, or 4D; bitshuffle-LZ4, LZ4, Blosc … through
                        hdf5plugin), .npy, raw binary (--dtype --shape --offset), and through RosettaSciIO Merlin .mib,
                        EMPAD .xml, Gatan .dm3/.dm4, .blo, .tvips, .mrc, .ser, Velox .emd, .hspy/.zspy. Counts stay
                        counts (uint16 frames give a uint16 store; others float32): each scan's mean pattern sum is
                        recorded and readers divide by it. Optics and calibration come from the microscope log
                        (--meta) with the flags overriding it. py4DSTEM/EMD files are read through py4DSTEM, their
                        calibration (R and Q pixel sizes, QR rotation/flip, origin) from the DataCube, and each scan
                        scaled so its mean pattern sums to 1 (factors recorded in the store's provenance).
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
                   help="detector pixel (along Qx, Qy, in pixels of the files, before --bin) of the unscattered "
                        "beam's centre (default: a py4DSTEM file's calibrated origin qx0_mean/qy0_mean, else the "
                        "middle of the stored patterns)")
    o.add_argument("--periodic", action="store_true", default=None,
                   help="the scan covers whole periods of a periodic specimen (default: recorded, else no)")
    o.add_argument("--intensity-scale", type=positive_float, nargs="+", default=None, metavar="S",
                   help="multiply the intensities by S (one value, or one per scan) instead of normalising each "
                        "scan's mean pattern sum to 1")
    o.add_argument("--chunk", type=positive_int, nargs="+", default=None, metavar="N",
                   help="scan positions per store chunk along Rx and Ry (one value for both; default: ~8 MiB "
                        "chunks)")
    c = p.add_argument_group("camera files (streamed)")
    c.add_argument("--dataset", default=None, metavar="NAME",
                   help="HDF5 dataset of the frames (default: entry/data/data, else the file's only 3D/4D dataset; "
                        "naming one also reads a py4DSTEM/EMD file as plain HDF5), or the signal (index or title) of "
                        "a RosettaSciIO file holding several")
    c.add_argument("--scan-shape", type=positive_int, nargs=2, default=None, metavar=("RX", "RY"),
                   help="scan positions of a stack of frames, in row-major order (frame k is at k // RY, k %% RY; "
                        "default: the microscope log's scan_shape)")
    c.add_argument("--scan-step", type=positive_float, nargs="+", default=None, metavar="Å",
                   help="scan step in Å along Rx (and Ry) (default: the log's, else the file's calibration)")
    c.add_argument("--detector-sampling", type=positive_float, nargs="+", default=None, metavar="1/Å",
                   help="detector pixel size in 1/Å of the files' pixels, before --bin: mrad per pixel / 1000 / λ "
                        "(default: the log's detector_angle_per_pixel or detector_sampling, else the file's)")
    c.add_argument("--bin", type=positive_int, default=1, metavar="B",
                   help="sum B×B detector pixels (the detector sampling grows B-fold; default 1)")
    c.add_argument("--dtype", default=None, metavar="DTYPE",
                   help="values of a raw binary file: a NumPy dtype such as uint16, <u2, >u4, float32")
    c.add_argument("--shape", type=positive_int, nargs="+", default=None, metavar="N",
                   help="shape of a raw binary file: N QX QY (frames), RX RY QX QY, or QX QY (as many frames as it "
                        "holds)")
    c.add_argument("--offset", type=nonnegative_int, default=0, metavar="BYTES",
                   help="header bytes before the first value of a raw binary file (default 0)")
    c.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="Dask threads (default: one per core, at most 8); memory is about N × a few chunks")
    c.add_argument("--no-progress", action="store_true", help="no progress bar (it is shown on a terminal only)")


def _kinds(args) -> list[str]:
    """The reader of each file (one line naming a missing one with its role); the three must be of one kind."""
    files = (args.minus, args.focus, args.plus)
    kinds = []
    for role, path in zip(_ROLES, files):
        if not os.path.exists(path):
            raise ValueError(f"the {role} file {path!r} does not exist")
        kinds.append(frame_format(path, dataset=args.dataset, dtype=args.dtype, shape=args.shape))
    if "py4dstem" in kinds and len(set(kinds)) > 1:
        which = [f"{role} is {kind}" for role, kind in zip(_ROLES, kinds)]
        raise ValueError(f"give three files of one kind: {', '.join(which)} (a py4DSTEM file is read through py4DSTEM)")
    return kinds


def run(args: argparse.Namespace) -> int:
    """Import the three files and print the store's summary."""
    chunks = pair(args.chunk, option="--chunk")
    if args.intensity_scale is not None and len(args.intensity_scale) not in (1, 3):
        raise ValueError(f"--intensity-scale takes one value or three (one per scan), got {args.intensity_scale}")
    for flag in ("scan_step", "detector_sampling"):
        pair(getattr(args, flag), option="--" + flag.replace("_", "-"))
    log = read_microscope_log(args.meta) if args.meta is not None else None
    values = {}
    for name, flag in (("defocus", "--defocus"), ("energy", "--energy"), ("semiangle", "--semiangle")):
        values[name] = getattr(args, name) if getattr(args, name) is not None else getattr(log, name, None)
        if values[name] is None:
            raise ValueError(f"no {name}: give {flag} or a microscope log with it (--meta FILE)")
    kinds = _kinds(args)
    camera = kinds[0] != "py4dstem"
    if not camera:
        given = [flag for name, flag, default in _CAMERA_FLAGS if getattr(args, name) != default]
        if given:
            raise ValueError(f"{', '.join(given)} apply to camera files; py4DSTEM files carry their shape and "
                             "calibration (drop the flag, or name the frames' dataset with --dataset)")
    inputs = [args.minus, args.focus, args.plus, *([args.meta] if args.meta else [])]
    start = time.perf_counter()
    with claim_output(args.out, overwrite=args.overwrite, inputs=inputs):
        if camera:
            path = import_frames(
                args.minus, args.focus, args.plus, out=args.out, log=log, **values, dataset=args.dataset,
                scan_shape=args.scan_shape, dtype=args.dtype, shape=args.shape, offset=args.offset,
                binning=args.bin, scan_step=args.scan_step, detector_sampling=args.detector_sampling,
                detector_center=args.detector_center, aperture_edge=args.aperture_edge or 0.0,
                aberrations=None if args.cs is None else {"C30": args.cs}, periodic=bool(args.periodic),
                intensity_scale=args.intensity_scale, chunks=chunks, overwrite=args.overwrite, threads=args.threads,
                progress=not args.no_progress and sys.stderr.isatty(),
            )
        else:
            path = import_files(
                args.minus, args.focus, args.plus,
                defocus=values["defocus"], energy=values["energy"], semiangle=values["semiangle"], out=args.out,
                aperture_edge=args.aperture_edge, aberrations=None if args.cs is None else {"C30": args.cs},
                detector_center=args.detector_center, chunks=chunks, overwrite=args.overwrite,
                periodic=args.periodic, intensity_scale=args.intensity_scale,
            )
    seconds = time.perf_counter() - start
    store = open_scan_store(path)
    rate = ""
    if camera:
        read = sum(os.path.getsize(p) for p in (args.minus, args.focus, args.plus) if os.path.isfile(p))
        seconds = max(seconds, 1e-9)
        rate = (f" ({read / 1e6 / seconds:.0f} MB/s of files, {store.intensity.nbytes / 1e6 / seconds:.0f} MB/s "
                "of patterns)")
    print(f"wrote {path} in {seconds:.1f} s{rate}", file=sys.stderr)
    print(store.describe())
    return 0

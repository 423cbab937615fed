"""The streaming import: three camera files (a defocus series) into a scan store, block by block on Dask threads.

Every cheap check runs before any data is read (files, formats, shapes, frame counts, optics, calibration). Then one
Dask task per store block of scan positions (cx × cy, the store's chunks) reads that block from each of the three
files (its own file handles), bins the detector if asked (sums of b×b pixels), and writes the three chunks. Memory is
a few chunks per thread, whatever the scan's size.

Counts stay counts: integer frames whose binned values fit are stored as uint16 (uint8/uint16 frames unbinned, uint8
binned up to 16×16), all others as float32 (uint32, signed integers, floats; integers are exact up to 2²⁴). Nothing is
scaled on the way: each scan's mean pattern sum ⟨Σ⟩ is measured while writing and recorded, and the intensity
array's ``scale`` attribute (1/⟨Σ⟩ per scan, or the factors given) is what :func:`flowtie_dask.store.read_block`
multiplies by, so the methods see the store's normalisation (an uncropped pattern sums to 1) as before.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time

import dask
import numpy as np

from ... import __version__
from ...cluster import compute
from ...pairs import pair
from ...physics import wavelength
from ...store import ScanMetadata, write_scan_store
from .base import jsonable
from .opening import open_frames

__all__ = ["import_frames", "store_dtype_for", "SCALE_DEFINITION"]

_ROLES = ("minus (−Δz)", "focus", "plus (+Δz)")
SCALE_DEFINITION = ("normalised intensity = stored value × scale[defocus index] (1 / mean pattern sum of that scan "
                    "unless given); flowtie_dask.store.read_block applies it")


def store_dtype_for(dtypes, binning: int) -> str:
    """``uint16`` when every source is unsigned (or bool) and b²·max fits 16 bits, else ``float32``."""
    for dt in dtypes:
        dt = np.dtype(dt)
        if dt.kind not in "ub" or (1 if dt.kind == "b" else np.iinfo(dt).max) * binning ** 2 > 65535:
            return "float32"
    return "uint16"


def _bin(x: np.ndarray, b: int, dtype) -> np.ndarray:
    if b == 1:
        return x.astype(dtype, copy=False)
    r, c, qx, qy = x.shape
    acc = np.int64 if x.dtype.kind in "uib" else np.float64
    return x.reshape(r, c, qx // b, b, qy // b, b).sum(axis=(3, 5), dtype=acc).astype(dtype)


def _copy_block(sources, target: str, rows: slice, cols: slice, binning: int, dtype: str) -> np.ndarray:
    """One Dask task: block ``rows`` × ``cols`` of each source, binned, into ``intensity[d, rows, cols]``.

    Returns the three sums of the stored values (float64)."""
    import zarr

    arr = zarr.open_array(target, mode="r+").with_config({"write_empty_chunks": True})
    block = (rows.stop - rows.start, cols.stop - cols.start)
    sums = np.zeros(3)
    for d, source in enumerate(sources):
        with source.reopen(block=block) as s:  # its own handle: h5py files are opened per task
            y = _bin(s.read(rows, cols), binning, dtype)
        total = float(np.sum(y, dtype=np.float64))
        if not math.isfinite(total):
            i, j = np.argwhere(~np.isfinite(y).all(axis=(2, 3)))[0]
            raise ValueError(f"{source.path}: NaN or infinite intensity at scan position ({rows.start + i}, "
                             f"{cols.start + j}); clean the frames first")
        arr[d, rows, cols] = y
        sums[d] = total
    return sums


def _three_scales(values) -> list[float] | None:
    if values is None:
        return None
    values = [values] if np.ndim(values) == 0 else list(values)
    values = values * 3 if len(values) == 1 else values
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        out = []
    if len(out) != 3 or not all(math.isfinite(v) and v > 0 for v in out):
        raise ValueError(f"intensity_scale must be one positive number or three (one per scan), got {values!r}")
    return out


def _choose(name, given, log_value, file_value, flag, log_key):
    """(value, where it came from): the argument, else the microscope log, else the file's own calibration."""
    for value, where in ((given, f"argument {flag}"), (log_value, "microscope log"), (file_value, "the files")):
        if value is not None:
            return pair(value, name=name, finite=True), where
    raise ValueError(f"no {name.replace('_', ' ')}: give {flag} or {log_key} in the microscope log (--meta FILE)")


def _file_calibration(sources, key, energy):
    """One calibration value the files record (all three agreeing), converted to the store's units, or None."""
    values = []
    for s in sources:
        cal = dict(s.calibration)
        if key == "detector_sampling" and "detector_sampling" not in cal and "detector_angle" in cal:
            cal["detector_sampling"] = tuple(a * 1e-3 / wavelength(energy) for a in cal["detector_angle"])
        values.append(cal.get(key))
    if values[0] is None:
        return None
    for s, v in zip(sources[1:], values[1:]):
        if v is None or not np.allclose(v, values[0], rtol=1e-6):
            raise ValueError(f"{s.path} records {key.replace('_', ' ')} {v} but {sources[0].path} records "
                             f"{values[0]}; give it explicitly (--{key.replace('_', '-')})")
    return values[0]


def import_frames(minus, focus, plus, *, out, defocus=None, energy=None, semiangle=None, log=None, dataset=None,
                  scan_shape=None, dtype=None, shape=None, offset: int = 0, binning: int = 1, scan_step=None,
                  detector_sampling=None, detector_center=None, aperture_edge: float = 0.0, aberrations=None,
                  periodic: bool = False, intensity_scale=None, chunks=None, overwrite: bool = False, provenance=None,
                  threads: int | None = None, progress: bool = False, client=None) -> str:
    """Stream three camera files (a defocus series −Δz, 0, +Δz) into a scan store.

    Parameters
    ----------
    minus, focus, plus : str or PathLike
        HDF5 frame stacks, ``.npy``, raw binary or RosettaSciIO files (see :func:`~.opening.open_frames`), in the
        order of ``defocus``.
    out : str or PathLike
        The store folder (``*.zarr``), written atomically.
    defocus, energy, semiangle
        Δf = −C10 of the three files in Å, beam energy in eV, semi-angle in mrad; default: the microscope log's.
    log : MicroscopeLog, optional
        :func:`flowtie_dask.interop.microscope_log.read_microscope_log`; every argument given overrides it.
    dataset, scan_shape, dtype, shape, offset
        How to read the files (:func:`~.opening.open_frames`); ``scan_shape`` defaults to the log's.
    binning : int
        Sum b×b detector pixels (the detector sampling grows b-fold); the detector must divide by b.
    scan_step : float or (float, float), optional
        Å; default the log's, else the files' own calibration.
    detector_sampling : float or (float, float), optional
        1/Å per pixel of the files (before ``binning``); default the log's, else the files'.
    detector_center : (float, float), optional
        Pixel of the unscattered beam in the files' pixels (before binning); default the middle, (Qx//b)//2 … of
        the stored patterns. Binned: c_stored = (c − (b − 1)/2) / b.
    aperture_edge, aberrations, periodic
        As in :class:`flowtie_dask.store.ScanMetadata`.
    intensity_scale : float or 3 floats, optional
        Recorded as the store's ``scale`` instead of 1/⟨Σ⟩ of each scan.
    chunks : (cx, cy), optional
        Scan positions per store chunk (and per task); default ~8 MiB chunks.
    overwrite : bool
    provenance : dict, optional
        Merged into the store's provenance.
    threads : int, optional
        Dask threads (default: one per core, at most 8); memory is about threads × a few chunks.
    progress : bool
        A progress bar on stderr.
    client : distributed.Client or "inline", optional
        Run the tasks there instead of on threads of this process.

    Returns
    -------
    str
        The store's absolute path (complete: it is renamed into place only when every chunk is written).

    Raises
    ------
    ValueError
        One line naming the file or value and what to do; nothing is left at ``out``.
    """
    paths = [os.fspath(p) for p in (minus, focus, plus)]
    for role, p in zip(_ROLES, paths):
        if not os.path.exists(p):
            raise ValueError(f"the {role} file {p!r} does not exist")
    if not (isinstance(binning, (int, np.integer)) and binning >= 1):
        raise ValueError(f"the binning must be a whole number ≥ 1, got {binning!r}")
    binning = int(binning)
    out_path = os.path.abspath(os.fspath(out))
    if os.path.exists(out_path) and not overwrite:
        raise ValueError(f"{out_path!r} already exists; choose another --out or pass --overwrite")
    if not os.path.isdir(os.path.dirname(out_path)):
        raise ValueError(f"the folder {os.path.dirname(out_path)!r} for the output does not exist")
    optics = {}
    for name, value in (("defocus", defocus), ("energy", energy), ("semiangle", semiangle)):
        optics[name] = value if value is not None else getattr(log, name, None)
        if optics[name] is None:
            raise ValueError(f"no {name}: give --{name} or a microscope log with it (--meta FILE)")
    energy, semiangle = float(optics["energy"]), float(optics["semiangle"])
    defocus = tuple(float(d) for d in optics["defocus"])
    scales = _three_scales(intensity_scale)
    user_provenance = dict(provenance or {})
    try:
        json.dumps(user_provenance)
    except (TypeError, ValueError):
        raise ValueError("provenance must be JSON-serialisable (numbers, strings, lists, dicts)") from None
    scan_from = "the files"
    if scan_shape is None and getattr(log, "scan_shape", None) is not None:
        scan_shape, scan_from = log.scan_shape, "microscope log"
    elif scan_shape is not None:
        scan_from = "argument --scan-shape"

    sources = []
    try:
        for p in paths:
            sources.append(open_frames(p, dataset=dataset, scan_shape=scan_shape, dtype=dtype, shape=shape,
                                       offset=offset))
    finally:
        for s in sources:
            s.close()  # the tasks open their own handles
    s0 = sources[0]
    for role, s in zip(_ROLES[1:], sources[1:]):
        if s.shape != s0.shape:
            raise ValueError(f"{s.path} ({role}) has patterns {s.shape} but {s0.path} has {s0.shape}; the three scans "
                             "must have the same scan and detector size")
    rx, ry, qx, qy = s0.shape
    if qx % binning or qy % binning:
        raise ValueError(f"the {qx}×{qy} detector of {s0.path} does not divide into {binning}×{binning} bins; "
                         "choose a --bin that divides it")
    det = (qx // binning, qy // binning)
    step, step_from = _choose("scan_step", scan_step, getattr(log, "scan_step", None),
                              _file_calibration(sources, "scan_step", energy), "--scan-step", "scan_step_<unit>")
    dq, dq_from = _choose("detector_sampling", detector_sampling, getattr(log, "detector_sampling", None),
                          _file_calibration(sources, "detector_sampling", energy), "--detector-sampling",
                          "detector_angle_per_pixel_mrad or detector_sampling_<unit>")
    dq = (dq[0] * binning, dq[1] * binning)
    if detector_center is not None:
        c = pair(detector_center, name="detector_center", finite=True)
        center, center_from = tuple((v - (binning - 1) / 2) / binning for v in c), "argument (pixels of the files)"
    else:
        center, center_from = (float(det[0] // 2), float(det[1] // 2)), "detector middle (Qx//2, Qy//2)"
    if not (0 <= center[0] < det[0] and 0 <= center[1] < det[1]):
        raise ValueError(f"detector centre {center} (stored pixels) lies outside the {det[0]}×{det[1]} detector; "
                         "give --detector-center in pixels of the files")
    store_dtype = store_dtype_for([s.dtype for s in sources], binning)

    def metadata(prov):
        return ScanMetadata(energy=energy, semiangle=semiangle, defocus=defocus, scan_step=step, detector_sampling=dq,
                            detector_center=center, aberrations=dict(aberrations or {}),
                            aperture_edge=float(aperture_edge or 0.0), periodic=bool(periodic), provenance=prov)

    metadata(user_provenance)  # the optics and calibration checked before any data is read
    chunks = None if chunks is None else tuple(int(v) for v in pair(chunks, name="chunks", finite=True))
    start = time.perf_counter()
    with write_scan_store(out_path, metadata(user_provenance), scan_shape=(rx, ry), detector_shape=det,
                          chunks=chunks, dtype=store_dtype, overwrite=overwrite) as group:
        target = os.path.join(os.fspath(group.store.root), "intensity")
        cx, cy = (int(v) for v in group["intensity"].chunks[1:3])
        task = dask.delayed(_copy_block, pure=False)
        parts = [task(sources, target, slice(x0, min(x0 + cx, rx)), slice(y0, min(y0 + cy, ry)), binning,
                      store_dtype, dask_key_name=f"import-{x0}-{y0}")
                 for x0 in range(0, rx, cx) for y0 in range(0, ry, cy)]
        threads = threads or min(os.cpu_count() or 1, 8)  # past ~8 the HDF5 lock and the disk set the pace
        with dask.config.set(num_workers=threads) if client is None else contextlib.nullcontext():
            sums = np.sum(compute(*parts, client=client, progress=progress, label="import"), axis=0)
        means = [float(v) / (rx * ry) for v in sums]
        if scales is None:
            for s, m in zip(sources, means):
                if not m > 0:
                    raise ValueError(f"{s.path} has mean total counts per pattern {m:g} ≤ 0; cannot normalise it "
                                     "(give --intensity-scale)")
            scales, method = [1.0 / m for m in means], "1 / mean pattern sum of this scan (not applied to the values)"
        else:
            method = "given by the caller"
        group["intensity"].attrs.update({"scale": scales, "scale_definition": SCALE_DEFINITION})
        seconds = time.perf_counter() - start
        prov = {
            "source": "camera files " + ", ".join(os.path.basename(p) for p in paths),
            "importer": f"flowtie-dask {__version__} (flowtie_dask.interop.frames)",
            "files": [os.path.abspath(p) for p in paths],
            "format": [s.format for s in sources],
            "dataset": [s.dataset for s in sources],
            "source_shape": list(s0.shape), "source_dtype": [str(s.dtype) for s in sources],
            "store_dtype": store_dtype, "binning": binning, "scan_shape_from": scan_from,
            "scan_step_from": step_from, "detector_sampling_from": dq_from
            + (f", × {binning} for the binning" if binning > 1 else ""),
            "detector_center_from": center_from,
            "reader": [s.details for s in sources],
            "microscope_log": None if log is None else os.path.abspath(log.source) if log.source else None,
            "microscope_log_extra": None if log is None else jsonable(log.extra),
            "camera_binning": None if log is None else log.detector_binning,
            "import_seconds": round(seconds, 3),
        }
        prov.update(user_provenance)
        prov.update({"intensity_scale": scales, "intensity_scale_method": method, "mean_counts_per_pattern": means})
        group.attrs.update(metadata(prov).to_attrs())
    return out_path


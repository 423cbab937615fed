"""The scan-store writer behind the py4DSTEM import: three DataCubes checked, normalised and written block by block.

Every cheap argument is checked before any data is read; the DataCubes are loaded one at a time
(through the ``loaders`` given) and copied into the store chunk by chunk, never modified.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from ... import __version__
from ...pairs import pair
from ...physics import wavelength
from ...store import INTENSITY_NORMALIZATION, ScanMetadata, write_scan_store
from .calibration import _calibration_of, _check_record, _record_of
from .common import _py4dstem


def _chunk_pair(chunks) -> tuple[int, int] | None:
    if chunks is None:
        return None
    values = pair(chunks, name="chunks", finite=True, what="scan-position counts")
    if any(v < 1 or v != int(v) for v in values):
        raise ValueError(f"chunks must be positive integers, got {chunks!r}")
    return (int(values[0]), int(values[1]))


def _three_scales(intensity_scale) -> list[float] | None:
    if intensity_scale is None:
        return None
    values = [intensity_scale] if np.ndim(intensity_scale) == 0 else list(intensity_scale)
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ValueError(f"intensity_scale must be one number or three (one per scan), got {intensity_scale!r}")
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"intensity_scale must be positive numbers, got {intensity_scale!r}") from None
        if not (math.isfinite(f) and f > 0):
            raise ValueError(f"intensity_scale must be positive numbers, got {intensity_scale!r}")
        out.append(f)
    return out


def _blocks(scan_shape: tuple[int, int], chunks: tuple[int, int]):
    for x0 in range(0, scan_shape[0], chunks[0]):
        for y0 in range(0, scan_shape[1], chunks[1]):
            yield slice(x0, min(x0 + chunks[0], scan_shape[0])), slice(y0, min(y0 + chunks[1], scan_shape[1]))


def _check_cube(cube, label: str, py4DSTEM) -> None:
    if not isinstance(cube, py4DSTEM.DataCube):
        raise ValueError(f"{label} is a {type(cube).__name__}, not a py4DSTEM DataCube")
    data = cube.data
    if getattr(data, "ndim", None) != 4:
        raise ValueError(f"{label} must be 4D (Rx, Ry, Qx, Qy), got shape {getattr(data, 'shape', None)}")
    if min(data.shape) < 1:
        raise ValueError(f"{label} is empty, shape {tuple(data.shape)}")
    kind = np.dtype(data.dtype).kind
    if kind not in "uif":
        raise ValueError(f"{label} has {data.dtype} data; intensities must be real numbers")


def _mean_counts(data, chunks, label: str) -> float:
    total = 0.0
    for sx, sy in _blocks(data.shape[:2], chunks):
        total += float(np.sum(np.asarray(data[sx, sy]), dtype=np.float64))
    mean = total / (data.shape[0] * data.shape[1])
    if not math.isfinite(mean):
        raise ValueError(f"{label} contains NaN or infinite intensities; clean the data first")
    if not mean > 0:
        raise ValueError(f"{label} has mean total counts per pattern {mean:g} ≤ 0; cannot normalise it "
                         "(give intensity_scale explicitly)")
    return mean


# ------------------------------------------------------------------------------------------ the writer
def _write_store(loaders: Sequence[Callable[[], Any]], labels: Sequence[str], *, defocus, energy, semiangle,
                 out, aperture_edge, aberrations, detector_center, chunks, overwrite, provenance, periodic,
                 intensity_scale, files: list[str] | None) -> str:
    py4DSTEM = _py4dstem()
    if len(loaders) != 3:
        raise ValueError(f"a defocus series needs exactly three DataCubes (−Δz, 0, +Δz), got {len(loaders)}")
    # Check every cheap argument before reading any data.
    try:
        defocus = tuple(float(d) for d in defocus)
    except (TypeError, ValueError):
        raise ValueError(f"defocus must be three numbers in Å, got {defocus!r}") from None
    if len(defocus) != 3:
        raise ValueError(f"defocus must be three values in Å, one per DataCube, got {defocus!r}")
    if aperture_edge is not None and not (math.isfinite(float(aperture_edge)) and float(aperture_edge) >= 0):
        raise ValueError(f"aperture_edge must be ≥ 0 mrad, got {aperture_edge!r}")
    # The optics' plausibility, before the calibration is read: scan step, centre and detector sampling are
    # placeholders, the sampling 1 mrad per pixel (plausible at every energy; a fixed 1/Å is > 50 mrad below ~56 keV).
    # A non-positive or non-finite energy keeps 1/Å, so ScanMetadata names the energy.
    e = float(energy)
    ScanMetadata(energy=e, semiangle=float(semiangle), defocus=defocus, scan_step=1.0,
                 detector_sampling=1e-3 / wavelength(e) if math.isfinite(e) and e > 0 else 1.0,
                 detector_center=0.0, aberrations=dict(aberrations or {}))
    energy, semiangle = float(energy), float(semiangle)
    scales = _three_scales(intensity_scale)
    chunks = _chunk_pair(chunks)
    if detector_center is not None:
        detector_center = pair(detector_center, name="detector_center", finite=True)
    user_provenance = dict(provenance or {})
    try:
        json.dumps(user_provenance)
    except (TypeError, ValueError):
        raise ValueError("provenance must be JSON-serialisable (numbers, strings, lists, dicts)") from None
    out_path = os.path.abspath(os.fspath(out))
    if os.path.exists(out_path) and not overwrite:
        raise ValueError(f"{out_path!r} already exists; choose another --out or pass --overwrite")
    if not os.path.isdir(os.path.dirname(out_path)):
        raise ValueError(f"the folder {os.path.dirname(out_path)!r} for the output does not exist")

    cube0 = loaders[0]()
    _check_cube(cube0, labels[0], py4DSTEM)
    shape = tuple(int(v) for v in cube0.data.shape)
    cal0 = _calibration_of(cube0, energy, labels[0])
    rec0 = _record_of(cube0)
    # Optics the caller left open come from the export record, else the defaults.
    rec_or = (lambda key, default: rec0[key] if rec0 is not None and key in rec0 else default)
    if aperture_edge is None:
        aperture_edge = float(rec_or("aperture_edge_mrad", 0.0))
    if aberrations is None:
        aberrations = {k: float(v) for k, v in dict(rec_or("aberrations_A", {}) or {}).items()}
    if periodic is None:
        periodic = bool(rec_or("periodic", False))
    scan_origin = tuple(float(v) for v in rec_or("scan_origin_A", (0.0, 0.0)))

    if detector_center is not None:
        center, center_from = detector_center, "argument"
    elif cal0.origin is not None:
        center, center_from = cal0.origin, "py4DSTEM calibration origin (qx0_mean, qy0_mean)"
    else:
        center, center_from = (float(shape[2] // 2), float(shape[3] // 2)), "detector middle (Qx//2, Qy//2)"
    if not (0 <= center[0] < shape[2] and 0 <= center[1] < shape[3]):
        raise ValueError(f"detector centre {center} lies outside the {shape[2]}×{shape[3]} detector; "
                         "give --detector-center in pixels")

    def metadata(center, prov):
        return ScanMetadata(
            energy=energy, semiangle=semiangle, defocus=defocus, scan_step=cal0.scan_step,
            detector_sampling=cal0.detector_sampling, detector_center=center, detector_rotation=cal0.rotation,
            detector_transpose=cal0.transpose, aberrations=aberrations, aperture_edge=float(aperture_edge),
            scan_origin=scan_origin, periodic=periodic, provenance=prov,
        )

    meta = metadata(center, user_provenance)
    names, methods, means, origins, used_scales = [], [], [], [], []
    with write_scan_store(out_path, meta, scan_shape=shape[:2], detector_shape=shape[2:], chunks=chunks,
                          overwrite=overwrite) as group:
        arr = group["intensity"]
        block = tuple(int(v) for v in arr.chunks[1:3])
        for i in range(3):
            cube = cube0 if i == 0 else loaders[i]()
            label = labels[i]
            if i:
                _check_cube(cube, label, py4DSTEM)
                if tuple(cube.data.shape) != shape:
                    raise ValueError(f"{label} has shape {tuple(cube.data.shape)} but {labels[0]} has {shape}; "
                                     "the three scans must have the same scan and detector size")
                cal = _calibration_of(cube, energy, label)
                for what, a, b in (("scan step (Å)", cal.scan_step, cal0.scan_step),
                                   ("detector sampling (1/Å)", cal.detector_sampling, cal0.detector_sampling)):
                    if not math.isclose(a, b, rel_tol=1e-6):
                        raise ValueError(f"{label} has {what} {a:.6g} but {labels[0]} has {b:.6g}; "
                                         "the three scans must share one calibration")
                if abs(cal.rotation - cal0.rotation) > 1e-6 or cal.transpose != cal0.transpose:
                    raise ValueError(f"{label} has QR rotation/flip ({cal.rotation:g}°, {cal.transpose}) but "
                                     f"{labels[0]} has ({cal0.rotation:g}°, {cal0.transpose}); "
                                     "the three scans must share one calibration")
            else:
                cal = cal0
            rec = rec0 if i == 0 else _record_of(cube)
            _check_record(rec, label, i, defocus, energy, semiangle)
            if cal.origin_spread > 1.0:
                warnings.warn(f"{label}: the calibrated origin moves by {cal.origin_spread:.1f} px over the scan; "
                              "the store assumes one fixed centre, so align the patterns in py4DSTEM first",
                              stacklevel=3)
            if detector_center is None and cal.origin is not None:
                if cal0.origin is None or max(abs(a - b) for a, b in zip(cal.origin, cal0.origin)) > 0.5:
                    raise ValueError(f"{label} has detector origin {cal.origin} but {labels[0]} has {cal0.origin}; "
                                     "give --detector-center CX CY (pixels) for all three")
                origins.append(cal.origin)
            data = cube.data
            if scales is not None:
                scale, method = scales[i], "given by the caller"
            elif rec is not None and rec.get("intensity_normalization") == INTENSITY_NORMALIZATION:
                scale, method = 1.0, "1 (the file records the store's normalisation already)"
            else:
                scale = 1.0 / _mean_counts(data, block, label)
                method = "1 / mean total counts per pattern of this scan"
            total = 0.0
            for sx, sy in _blocks(shape[:2], block):
                values = np.array(data[sx, sy], dtype=np.float64)  # a copy: the input is never modified
                if not np.isfinite(values).all():
                    raise ValueError(f"{label} contains NaN or infinite intensities near scan position "
                                     f"({sx.start}, {sy.start}); clean the data first")
                total += float(values.sum())
                values *= scale
                arr[i, sx, sy] = values.astype(np.float32)
            names.append(str(getattr(cube, "name", "")))
            methods.append(method)
            means.append(total / (shape[0] * shape[1]))
            used_scales.append(scale)
            del cube, data
        if detector_center is None and len(origins) == 3:
            center = tuple(float(np.mean([o[k] for o in origins])) for k in range(2))
        if files:
            source = "py4DSTEM files " + ", ".join(os.path.basename(f) for f in files)
        else:
            source = "py4DSTEM DataCubes " + ", ".join(repr(n) for n in names)
        prov = {
            "source": source,
            "importer": f"flowtie-dask {__version__} (flowtie_dask.interop.py4dstem)",
            "py4DSTEM_version": str(py4DSTEM.__version__),
            "files": list(files) if files else None,
            "datacube_names": names,
            "source_calibration": cal0.raw,
            "detector_center_from": center_from,
        }
        prov.update(user_provenance)
        prov.update({
            "intensity_scale": [float(s) for s in used_scales],
            "intensity_scale_method": methods,
            "mean_counts_per_pattern": means,
        })
        final = metadata(center, prov)
        group.attrs.update(final.to_attrs())
    return out_path

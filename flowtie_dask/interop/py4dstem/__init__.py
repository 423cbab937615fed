"""py4DSTEM DataCubes in and out of flowtie-dask scan stores; reconstruction results to py4DSTEM files.

Conventions (py4DSTEM 0.14)
---------------------------
Axes
    A DataCube is (Rx, Ry, Qx, Qy), the store's axis order; the three DataCubes of a defocus series become
    ``intensity[0]``, ``intensity[1]``, ``intensity[2]`` in the order given, which is the order of
    ``defocus``.
Defocus
    Δf = −C10 in Å, positive = underfocus (abTEM/Kirkland), as everywhere in flowtie-dask.
Scan step
    ``calibration.R_pixel_size`` in ``R_pixel_units``: ``A``/``Å``/``angstrom`` (as is), ``nm`` (×10),
    ``pm`` (÷100), ``um``/``µm`` (×10⁴). ``pixels`` (py4DSTEM's default, i.e. uncalibrated) or unknown
    units are refused: calibrate the DataCube first.
Detector sampling
    ``calibration.Q_pixel_size`` in ``Q_pixel_units``: ``A^-1`` (or ``1/A``, ``1/Å``, ``Å^-1``) as is,
    ``nm^-1`` (or ``1/nm``) ÷10, ``mrad`` → q = θ/λ with θ in rad and λ from the beam energy (the
    small-angle relation py4DSTEM's own readers use). ``pixels`` is refused.
Detector orientation
    ``QR_rotation_degrees`` → ``detector_rotation`` and ``QR_flip`` → ``detector_transpose``, unchanged
    and with py4DSTEM's meaning (``BraggVectors`` applies them this way): a detector vector
    (qx, qy) relative to the centre is first swapped to (qy, qx) when the flip is set, then rotated into
    scan coordinates by R(θ) = [[cos θ, −sin θ], [sin θ, cos θ]]. An unset rotation is 0°.
Detector centre
    The ``detector_center`` argument if given, else the calibration's origin (``qx0_mean``,
    ``qy0_mean``, in pixels) if set, else (Qx//2, Qy//2). The patterns are not shifted.
Intensity
    Stored float32, each scan multiplied by a factor that makes its mean pattern sum 1 (the store's
    convention: fraction of the incident beam per pixel), unless the DataCube carries the record that
    :func:`export_store` writes (the patterns already follow the convention: factor 1) or the caller
    gives the factors. The factors are recorded in ``provenance["intensity_scale"]`` so that
    ``stored = original × intensity_scale[i]``.

Exported DataCubes carry a py4DSTEM ``Metadata`` called ``flowtie_dask`` with the optics (energy,
semi-angle, defocus and its convention, aberrations, aperture edge) so a round trip loses nothing.

py4DSTEM is imported only when a function here runs; ``CUPY_PYLOPS`` is set to ``0`` first unless
already set (py4DSTEM imports pylops, which otherwise probes CuPy and fails on machines without a GPU).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ... import __version__
from ...atomic import atomic_path, check_output
from ...physics import DEFOCUS_CONVENTION, wavelength
from ...store import INTENSITY_NORMALIZATION, SCHEMA, ScanMetadata, open_scan_store, write_scan_store

__all__ = [
    "datacubes_to_store",
    "import_files",
    "read_datacube",
    "store_to_datacubes",
    "export_store",
    "export_result",
    "is_scan_store",
]

#: Name of the py4DSTEM Metadata written on exported objects.
RECORD_NAME = "flowtie_dask"
DATACUBE_RECORD_SCHEMA = "flowtie-dask/datacube"
RESULT_RECORD_SCHEMA = "flowtie-dask/result"

_R_TO_A = {"a": 1.0, "å": 1.0, "angstrom": 1.0, "angstroms": 1.0, "ang": 1.0, "nm": 10.0, "pm": 0.01,
           "um": 1e4, "µm": 1e4, "μm": 1e4}
_Q_TO_INV_A = {"a^-1": 1.0, "1/a": 1.0, "a-1": 1.0, "å^-1": 1.0, "1/å": 1.0, "å-1": 1.0, "angstrom^-1": 1.0,
               "1/angstrom": 1.0, "nm^-1": 0.1, "1/nm": 0.1, "nm-1": 0.1}
_UNCALIBRATED = {"pixels", "pixel", "px", "", "none", "unknown"}
_ROLES = ("minus (−Δz)", "focus", "plus (+Δz)")
_H5_EXTENSIONS = (".h5", ".hdf5", ".emd", ".py4dstem")


# --------------------------------------------------------------------------------------------- helpers
def _py4dstem():
    """Import py4DSTEM (optional dependency) with a one-line error when it is missing."""
    os.environ.setdefault("CUPY_PYLOPS", "0")
    try:
        import py4DSTEM
    except ImportError:
        raise RuntimeError("py4DSTEM is not installed; install it with pip install 'flowtie-dask[py4dstem]'") from None
    return py4DSTEM


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unit_key(units) -> str:
    return str(units).strip().lower().replace(" ", "")


def _positive(value, what: str, label: str) -> float:
    try:
        v = float(np.asarray(value).item())
    except (TypeError, ValueError):
        raise ValueError(f"{label}: {what} must be one positive number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{label}: {what} must be a positive number, got {v!r}")
    return v


def _json_safe(value):
    """Numbers, strings, bools, lists and dicts of them as plain Python (numpy scalars/arrays converted)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist()) if value.size <= 16 else f"array of shape {value.shape}"
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


def _pair_of_numbers(value, what: str) -> tuple[float, float]:
    try:
        v = tuple(float(x) for x in np.ravel(value))
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be two numbers, got {value!r}") from None
    if len(v) != 2 or not all(math.isfinite(x) for x in v):
        raise ValueError(f"{what} must be two finite numbers, got {value!r}")
    return v


def _chunk_pair(chunks) -> tuple[int, int] | None:
    if chunks is None:
        return None
    values = [chunks] if np.ndim(chunks) == 0 else list(chunks)
    if len(values) not in (1, 2):
        raise ValueError(f"chunks must be one or two scan-position counts, got {chunks!r}")
    try:
        ints = [int(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"chunks must be positive integers, got {chunks!r}") from None
    if any(v < 1 or v != float(w) for v, w in zip(ints, values)):
        raise ValueError(f"chunks must be positive integers, got {chunks!r}")
    return (ints[0], ints[-1])


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


def _count_non_finite(arr) -> tuple[int, tuple | None]:
    """Non-finite values of a (Zarr or NumPy) array, read one storage chunk block at a time.

    Returns
    -------
    count : int
    first : tuple of int or None
        Index of the first one found.
    """
    import itertools

    shape = tuple(arr.shape)
    if not shape:
        v = np.asarray(arr[()])
        return (0, None) if np.isfinite(v) else (1, ())
    if np.dtype(arr.dtype).kind not in "fc":
        return 0, None
    chunks = tuple(getattr(arr, "chunks", None) or shape)
    # whole chunks along the leading axes, the trailing axes (e.g. a detector pattern) whole
    ranges = [range(0, n, max(1, c)) for n, c in zip(shape, chunks)]
    count, first = 0, None
    for start in itertools.product(*ranges):
        sl = tuple(slice(a, min(a + c, n)) for a, c, n in zip(start, chunks, shape))
        bad = ~np.isfinite(np.asarray(arr[sl]))
        n_bad = int(bad.sum())
        if n_bad:
            if first is None:
                first = tuple(int(a + i[0]) for a, i in zip(start, np.nonzero(bad)))
            count += n_bad
    return count, first


def _check_out_file(out, overwrite: bool, what: str = "output") -> str:
    out = os.path.abspath(os.fspath(out))
    if os.path.isdir(out):
        raise ValueError(f"{out!r} is a folder; give a file name for the {what}")
    return check_output(out, overwrite=overwrite)


# ------------------------------------------------------------------------------------- calibration in
@dataclass(frozen=True)
class _Calibration:
    scan_step: float  # Å
    detector_sampling: float  # 1/Å
    rotation: float  # degrees
    transpose: bool
    origin: tuple[float, float] | None  # detector pixels
    origin_spread: float  # largest peak-to-peak variation of a per-position origin, pixels
    raw: dict


def _calibration_of(cube, energy: float, label: str) -> _Calibration:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = cube.calibration
    if cal is None:
        raise ValueError(f"{label} has no py4DSTEM calibration; set R_pixel_size/R_pixel_units and "
                         "Q_pixel_size/Q_pixel_units on datacube.calibration first")
    r_size, r_units = cal.get_R_pixel_size(), cal.get_R_pixel_units()
    q_size, q_units = cal.get_Q_pixel_size(), cal.get_Q_pixel_units()
    rk, qk = _unit_key(r_units), _unit_key(q_units)
    if rk in _UNCALIBRATED:
        raise ValueError(f"{label}: the scan step is uncalibrated (R_pixel_units = {r_units!r}); calibrate it in "
                         "py4DSTEM first: datacube.calibration.set_R_pixel_size(step); set_R_pixel_units('A')")
    if rk not in _R_TO_A:
        raise ValueError(f"{label}: R_pixel_units {r_units!r} is not a length unit flowtie-dask reads "
                         "(A, nm, pm, µm); set it to 'A' or 'nm'")
    step = _positive(r_size, "R_pixel_size", label) * _R_TO_A[rk]
    if qk in _UNCALIBRATED:
        raise ValueError(f"{label}: the detector is uncalibrated (Q_pixel_units = {q_units!r}); calibrate it in "
                         "py4DSTEM first: datacube.calibration.set_Q_pixel_size(dq); "
                         "set_Q_pixel_units('A^-1' or 'mrad')")
    q = _positive(q_size, "Q_pixel_size", label)
    if qk == "mrad":
        sampling = q * 1e-3 / wavelength(energy)
    elif qk in _Q_TO_INV_A:
        sampling = q * _Q_TO_INV_A[qk]
    else:
        raise ValueError(f"{label}: Q_pixel_units {q_units!r} is not a unit flowtie-dask reads "
                         "(A^-1, nm^-1, mrad); set it to 'A^-1' or 'mrad'")
    rot = cal.get_QR_rotation_degrees()
    rot = 0.0 if rot is None else float(np.asarray(rot).item())
    if not math.isfinite(rot):
        raise ValueError(f"{label}: QR_rotation_degrees is {rot!r}; set a finite rotation or none")
    flip = cal.get_QR_flip()
    flip = bool(False if flip is None else np.asarray(flip).item())
    qx0m, qy0m = cal.get_origin_mean()
    origin = None
    if qx0m is not None and qy0m is not None:
        origin = (float(np.mean(qx0m)), float(np.mean(qy0m)))
        if not all(math.isfinite(v) for v in origin):
            origin = None
    spread = 0.0
    for v in (cal.get_qx0(), cal.get_qy0()):
        if isinstance(v, np.ndarray) and v.size > 1 and np.isfinite(v).all():
            spread = max(spread, float(np.ptp(v)))
    raw = _json_safe({
        "R_pixel_size": r_size, "R_pixel_units": str(r_units), "Q_pixel_size": q_size, "Q_pixel_units": str(q_units),
        "QR_rotation_degrees": rot, "QR_flip": flip, "origin_mean_px": list(origin) if origin else None,
    })
    return _Calibration(step, sampling, rot, flip, origin, spread, raw)


def _record_of(cube) -> dict | None:
    """The ``flowtie_dask`` Metadata that :func:`export_store` writes, as a dict (None if absent)."""
    md = getattr(cube, "metadata", None)
    if not isinstance(md, dict) or RECORD_NAME not in md:
        return None
    rec = md[RECORD_NAME]
    try:
        params = {k: rec[k] for k in rec.keys}  # emdfile Metadata.keys is a property
    except Exception:
        return None
    return params if params.get("schema") == DATACUBE_RECORD_SCHEMA else None


def _check_record(rec: dict | None, label: str, index: int, defocus, energy, semiangle) -> None:
    if rec is None:
        return
    for key, given, what, unit in (("defocus_A", defocus[index], "defocus Δf", "Å"),
                                   ("energy_eV", energy, "energy", "eV"),
                                   ("semiangle_mrad", semiangle, "semi-angle", "mrad")):
        if key in rec and not math.isclose(float(rec[key]), float(given), rel_tol=1e-6, abs_tol=1e-6):
            hint = " (pass the files in the order of the defocus values)" if key == "defocus_A" else ""
            raise ValueError(f"{label} was exported with {what} {float(rec[key]):g} {unit} but is given "
                             f"{float(given):g} {unit}{hint}")


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
    ScanMetadata(energy=float(energy), semiangle=float(semiangle), defocus=defocus, scan_step=1.0,
                 detector_sampling=1.0, detector_center=0.0, aberrations=dict(aberrations or {}))
    energy, semiangle = float(energy), float(semiangle)
    scales = _three_scales(intensity_scale)
    chunks = _chunk_pair(chunks)
    if detector_center is not None:
        detector_center = _pair_of_numbers(detector_center, "detector_center")
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


# ------------------------------------------------------------------------------------------ public in
def datacubes_to_store(cubes, *, defocus, energy, semiangle, out, aperture_edge=None, aberrations=None,
                       detector_center=None, chunks=None, overwrite=False, provenance=None, periodic=None,
                       intensity_scale=None) -> str:
    """Write three in-memory py4DSTEM DataCubes (a defocus series) as a scan store.

    Parameters
    ----------
    cubes : sequence of 3 py4DSTEM.DataCube
        Each of shape (Rx, Ry, Qx, Qy), all the same shape and calibration, in the order of ``defocus``.
        Scan step from ``R_pixel_size``/``R_pixel_units`` (Å, nm, pm or µm; ``pixels`` is refused),
        detector sampling from ``Q_pixel_size``/``Q_pixel_units`` (A^-1, nm^-1 or mrad). The arrays are
        read block by block and never modified.
    defocus : sequence of 3 floats
        Δf = −C10 of each cube in Å (positive = underfocus), e.g. (−20, 0, 20).
    energy : float
        Beam energy in eV.
    semiangle : float
        Convergence semi-angle in mrad.
    out : str or PathLike
        Destination store folder (``*.zarr``), written atomically.
    aperture_edge : float, optional
        Soft aperture edge width in mrad; default: the value recorded by :func:`export_store`, else 0.
    aberrations : dict, optional
        ``C12`` (Å), ``phi12`` (rad), ``C30`` (Å); default: the recorded ones, else none.
    detector_center : (float, float), optional
        Pixel (qx, qy) of the unscattered beam's centre; default: the calibration's origin
        (``qx0_mean``, ``qy0_mean``), else (Qx//2, Qy//2).
    chunks : int or (int, int), optional
        Scan positions per store chunk (cx, cy); default ~8 MiB chunks. Memory use is a few chunks.
    overwrite : bool
        Replace an existing store at ``out``.
    provenance : dict, optional
        JSON-serialisable extra record merged into the store's provenance.
    periodic : bool, optional
        True when the scan covers whole periods of a periodic specimen; default: recorded, else False.
    intensity_scale : float or 3 floats, optional
        Factors the intensities are multiplied by; default: 1 / (mean total counts per pattern) of each
        scan, or 1 for DataCubes exported by :func:`export_store` (already normalised).

    Returns
    -------
    str
        Absolute path of the store; ``provenance["intensity_scale"]`` holds the three factors used.

    Raises
    ------
    ValueError
        One line naming the problem: not DataCubes, shapes or calibrations that differ, uncalibrated or
        unknown units, bad optics, an existing ``out`` without ``overwrite``.
    """
    cubes = list(cubes) if isinstance(cubes, (list, tuple)) else [cubes]
    labels = [f"DataCube {i} ({_ROLES[i] if i < 3 else '?'}, {getattr(c, 'name', '?')!r})"
              for i, c in enumerate(cubes)]
    loaders = [(lambda c=c: c) for c in cubes]
    return _write_store(loaders, labels, defocus=defocus, energy=energy, semiangle=semiangle, out=out,
                        aperture_edge=aperture_edge, aberrations=aberrations, detector_center=detector_center,
                        chunks=chunks, overwrite=overwrite, provenance=provenance, periodic=periodic,
                        intensity_scale=intensity_scale, files=None)


def _find_datacubes(obj, found: list) -> None:
    import emdfile

    from py4DSTEM import DataCube

    if isinstance(obj, DataCube):
        found.append(obj)
    if isinstance(obj, emdfile.Node):
        for key in list(obj.treekeys):
            _find_datacubes(obj.get_from_tree(key), found)


def _describe(obj) -> str:
    if isinstance(obj, (list, tuple)):
        return ", ".join(_describe(o) for o in obj) or "nothing"
    return f"{type(obj).__name__} {getattr(obj, 'name', '')!r}".strip()


def read_datacube(path) -> Any:
    """Read the one py4DSTEM DataCube in a file.

    Parameters
    ----------
    path : str or PathLike
        ``.h5``/``.hdf5``/``.emd``/``.py4dstem`` files are read with ``py4DSTEM.read`` (falling back
        to ``py4DSTEM.import_file`` for the HDF5 formats it imports, e.g. arina, abTEM); any other
        format (``.dm4``, ``.mib``, ``.raw`` …) with ``py4DSTEM.import_file``.

    Returns
    -------
    py4DSTEM.DataCube
        Shape (Rx, Ry, Qx, Qy), with the file's calibration; loaded into memory by py4DSTEM.

    Raises
    ------
    ValueError
        The file does not exist, py4DSTEM cannot read it, or it holds no DataCube or more than one.
    """
    py4DSTEM = _py4dstem()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"file {path!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a folder, not a py4DSTEM file")
    ext = os.path.splitext(path)[1].lower()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ext in _H5_EXTENSIONS:
            try:
                obj = py4DSTEM.read(path)
                if isinstance(obj, list) and all(isinstance(o, str) for o in obj):  # several EMD trees
                    obj = [py4DSTEM.read(path, datapath=o) for o in obj]
            except Exception as exc:
                try:
                    obj = py4DSTEM.import_file(path)
                except Exception as exc2:
                    raise ValueError(f"py4DSTEM cannot read {path!r}: {_first_line(exc)}; "
                                     f"import_file: {_first_line(exc2)}") from None
        else:
            try:
                obj = py4DSTEM.import_file(path)
            except Exception as exc:
                raise ValueError(f"py4DSTEM.import_file cannot read {path!r}: {_first_line(exc)}") from None
    found: list = []
    for o in obj if isinstance(obj, list) else [obj]:
        _find_datacubes(o, found)
    if not found:
        raise ValueError(f"{path!r} holds no py4DSTEM DataCube (found {_describe(obj)}); "
                         "give a file with a 4D-STEM DataCube")
    if len(found) > 1:
        raise ValueError(f"{path!r} holds {len(found)} DataCubes ({_describe(found)}); "
                         "save each scan of the series to its own file")
    return found[0]


def import_files(minus, focus, plus, *, defocus, energy, semiangle, out, aperture_edge=None, aberrations=None,
                 detector_center=None, chunks=None, overwrite=False, provenance=None, periodic=None,
                 intensity_scale=None) -> str:
    """Import three py4DSTEM-readable files (a defocus series) into a scan store.

    The files are read one at a time (py4DSTEM loads each fully into memory) and written block by
    block, so peak memory is about one scan plus one chunk.

    Parameters
    ----------
    minus, focus, plus : str or PathLike
        Files with one DataCube (Rx, Ry, Qx, Qy) each, in the order of ``defocus`` (−Δz, 0, +Δz):
        EMD/py4DSTEM ``.h5`` (``py4DSTEM.read``) or a raw format ``py4DSTEM.import_file`` reads.
    defocus : sequence of 3 floats
        Δf = −C10 of the three files in Å (positive = underfocus).
    energy : float
        Beam energy in eV.
    semiangle : float
        Convergence semi-angle in mrad.
    out : str or PathLike
        Destination store folder (``*.zarr``), written atomically.
    aperture_edge, aberrations, detector_center, chunks, overwrite, provenance, periodic, intensity_scale
        As in :func:`datacubes_to_store`.

    Returns
    -------
    str
        Absolute path of the store.

    Raises
    ------
    ValueError
        A file is missing or holds no DataCube, or anything :func:`datacubes_to_store` refuses.
    """
    paths = [os.fspath(p) for p in (minus, focus, plus)]
    for role, p in zip(_ROLES, paths):
        if not os.path.exists(p):
            raise ValueError(f"the {role} file {p!r} does not exist")
    labels = [f"{os.path.basename(p)} ({role})" for role, p in zip(_ROLES, paths)]
    loaders = [(lambda p=p: read_datacube(p)) for p in paths]
    return _write_store(loaders, labels, defocus=defocus, energy=energy, semiangle=semiangle, out=out,
                        aperture_edge=aperture_edge, aberrations=aberrations, detector_center=detector_center,
                        chunks=chunks, overwrite=overwrite, provenance=provenance, periodic=periodic,
                        intensity_scale=intensity_scale, files=[os.path.abspath(p) for p in paths])


# ----------------------------------------------------------------------------------------- public out
def _square(values, what: str, path: str) -> float:
    a, b = (float(v) for v in values)
    if not math.isclose(a, b, rel_tol=1e-9):
        raise ValueError(f"{path}: {what} ({a:g}, {b:g}) differs between the axes; py4DSTEM calibrations "
                         "hold one pixel size for both")
    return a


def _datacube_from_store(store, index: int):
    """DataCube ``index`` of an opened scan store, calibrated and carrying the ``flowtie_dask`` record."""
    py4DSTEM = _py4dstem()
    from emdfile import Metadata

    m = store.metadata
    step = _square(m.scan_step, "the scan step", store.path)
    dq = _square(m.detector_sampling, "the detector sampling", store.path)
    cube = py4DSTEM.DataCube(data=np.asarray(store.intensity[index]), name=f"defocus_{index}")
    cal = cube.calibration
    cal.set_R_pixel_size(step)
    cal.set_R_pixel_units("A")
    cal.set_Q_pixel_size(dq)
    cal.set_Q_pixel_units("A^-1")
    cal.set_origin(tuple(float(v) for v in m.detector_center))
    cal.set_QR_rotation_degrees(float(m.detector_rotation))
    cal.set_QR_flip(bool(m.detector_transpose))
    rec = Metadata(name=RECORD_NAME)
    values = {
        "schema": DATACUBE_RECORD_SCHEMA,
        "schema_version": 1,
        "source_store": os.path.abspath(store.path),
        "defocus_index": index,
        "defocus_A": float(m.defocus[index]),
        "defocus_series_A": [float(d) for d in m.defocus],
        "defocus_convention": DEFOCUS_CONVENTION,
        "energy_eV": float(m.energy),
        "semiangle_mrad": float(m.semiangle),
        "aperture_edge_mrad": float(m.aperture_edge),
        "aberrations_A": {k: float(v) for k, v in m.aberrations.items()},
        "scan_step_A": [float(v) for v in m.scan_step],
        "scan_origin_A": [float(v) for v in m.scan_origin],
        "detector_sampling_invA": [float(v) for v in m.detector_sampling],
        "detector_center_px": [float(v) for v in m.detector_center],
        "detector_rotation_deg": float(m.detector_rotation),
        "detector_transpose": bool(m.detector_transpose),
        "periodic": bool(m.periodic),
        "intensity_normalization": INTENSITY_NORMALIZATION,
    }
    for k, v in values.items():
        rec[k] = v
    cube.metadata = rec
    return cube


def store_to_datacubes(store_path) -> list:
    """The three scans of a scan store as calibrated py4DSTEM DataCubes (in memory).

    Parameters
    ----------
    store_path : str or PathLike
        A scan store (``flowtie-dask simulate``/``import``).

    Returns
    -------
    list of 3 py4DSTEM.DataCube
        Each (Rx, Ry, Qx, Qy) float32 in the store's normalisation, in the order of the store's
        defocus values; calibration R_pixel_size = scan step (``A``), Q_pixel_size = detector
        sampling (``A^-1``), origin = detector centre (pixels), QR_rotation_degrees/QR_flip = the
        detector rotation/transpose; a ``flowtie_dask`` Metadata holds the optics and defocus (Å).
        The whole store is loaded: use :func:`export_store` for large scans.

    Raises
    ------
    ValueError
        The store is invalid, or its scan step or detector sampling differs between the axes (py4DSTEM
        holds one pixel size).
    """
    store = open_scan_store(store_path)
    return [_datacube_from_store(store, i) for i in range(3)]


def export_store(store_path, out_prefix, *, overwrite=False) -> list[str]:
    """Write a scan store as three py4DSTEM files ``<out_prefix>_defocus_{0,1,2}.h5``.

    One scan is held in memory at a time. All three files are written under temporary names and
    renamed only when all succeeded, so a failure leaves no partial file.

    Parameters
    ----------
    store_path : str or PathLike
        A scan store, intensity (3, Rx, Ry, Qx, Qy).
    out_prefix : str or PathLike
        Path prefix of the files (its folder must exist).
    overwrite : bool
        Replace existing files.

    Returns
    -------
    list of 3 str
        Absolute paths, in the order of the store's defocus values (Δf in Å in each file's
        ``flowtie_dask`` Metadata; calibration as in :func:`store_to_datacubes`).

    Raises
    ------
    ValueError
        Invalid store, existing files without ``overwrite``, missing output folder, non-square pixels.
    """
    py4DSTEM = _py4dstem()
    store = open_scan_store(store_path)
    prefix = os.path.abspath(os.fspath(out_prefix))
    for suffix in (".h5", ".hdf5", ".emd"):
        if prefix.lower().endswith(suffix):
            prefix = prefix[: -len(suffix)]
    outs = [_check_out_file(f"{prefix}_defocus_{i}.h5", overwrite, "exported DataCube") for i in range(3)]
    _square(store.metadata.scan_step, "the scan step", store.path)
    _square(store.metadata.detector_sampling, "the detector sampling", store.path)
    bad, first = _count_non_finite(store.intensity)  # chunk by chunk, before any file is opened
    if bad:
        what = "intensities" if bad > 1 else "intensity"
        raise ValueError(f"{store.path!r} contains {bad} non-finite {what} (NaN or Inf; the first at defocus "
                         f"{first[0]}, scan position ({first[1]}, {first[2]})): fix or re-import the store; "
                         "nothing was exported")
    with contextlib.ExitStack() as stack:  # all three appear together, or none
        temps = [stack.enter_context(atomic_path(o, overwrite=overwrite)) for o in outs]
        for i, tmp in enumerate(temps):
            cube = _datacube_from_store(store, i)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                py4DSTEM.save(tmp, cube, mode="w")
            del cube
    return outs


def export_result(result_path, out, *, overwrite=False) -> str:
    """Write a reconstruction result as a py4DSTEM file holding a calibrated RealSlice.

    Parameters
    ----------
    result_path : str or PathLike
        Zarr group with a 2D float array ``phase`` (Nx, Ny) in rad, attributes ``pixel_size_A``
        ([dx, dy], Å) and ``origin_A`` ([x0, y0], Å; default [0, 0]) on the group (or on ``phase``),
        and optionally ``amplitude`` (Nx, Ny).
    out : str or PathLike
        Destination ``.h5`` file; written under a temporary name and renamed when complete.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    str
        Absolute path of the file. ``py4DSTEM.read(path)`` gives a RealSlice ``phase`` (Nx, Ny) in rad
        with ``calibration.R_pixel_size`` = dx and ``R_pixel_units`` = ``A``; the amplitude, when present,
        is a RealSlice ``amplitude`` in its tree (``.tree('amplitude')``); a ``flowtie_dask`` Metadata
        holds pixel_size_A, origin_A, units and the result group's attributes (as JSON).

    Raises
    ------
    ValueError
        Missing or malformed result, existing ``out`` without ``overwrite``, missing output folder.
    """
    import zarr

    path = os.fspath(result_path)
    if not os.path.exists(path):
        raise ValueError(f"result {path!r} does not exist")
    try:
        group = zarr.open_group(path, mode="r")
    except Exception:
        meta = os.path.join(path, "zarr.json")
        if os.path.isfile(meta):  # a damaged metadata file: say which and where
            try:
                with open(meta, encoding="utf-8", errors="replace") as f:
                    json.loads(f.read())
            except json.JSONDecodeError as exc:
                raise ValueError(f"{meta!r} is not valid JSON (line {exc.lineno} column {exc.colno}): {exc.msg}; "
                                 "the group is damaged: re-create it (reconstruct or import again)") from None
        raise ValueError(f"{path!r} is not a Zarr group; give the result folder written by "
                         "'flowtie-dask reconstruct'") from None
    if "phase" not in group:
        raise ValueError(f"{path!r} has no 'phase' array; give a reconstruction result")
    phase_arr = group["phase"]
    if not hasattr(phase_arr, "ndim") or phase_arr.ndim != 2 or np.dtype(phase_arr.dtype).kind != "f":
        raise ValueError(f"{path!r}: 'phase' must be a 2D float array, got {getattr(phase_arr, 'shape', None)} "
                         f"{getattr(phase_arr, 'dtype', None)}")
    attrs = dict(group.attrs)
    parr_attrs = dict(phase_arr.attrs)
    pixel = attrs.get("pixel_size_A", parr_attrs.get("pixel_size_A"))
    if pixel is None:
        raise ValueError(f"{path!r} has no 'pixel_size_A' attribute ([dx, dy] in Å)")
    dx, dy = _pair_of_numbers(pixel if np.ndim(pixel) else (pixel, pixel), "pixel_size_A")
    if not (dx > 0 and dy > 0):
        raise ValueError(f"{path!r}: pixel_size_A must be positive Å, got {pixel!r}")
    origin = _pair_of_numbers(attrs.get("origin_A", parr_attrs.get("origin_A", (0.0, 0.0))), "origin_A")
    phase = np.asarray(phase_arr[...])
    amplitude = None
    if "amplitude" in group:
        amplitude = np.asarray(group["amplitude"][...])
        if amplitude.shape != phase.shape:
            raise ValueError(f"{path!r}: amplitude shape {amplitude.shape} differs from phase shape {phase.shape}")
    for name, data in (("phase", phase), ("amplitude", amplitude)):
        if data is None:
            continue
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        if bad:
            first = tuple(int(i[0]) for i in np.nonzero(~np.isfinite(data)))
            raise ValueError(f"{path!r} contains {bad} non-finite value{'s' if bad > 1 else ''} (NaN or Inf) in its {name} (the first at "
                             f"pixel {first}): fix or re-run the reconstruction; nothing was exported")
    out = _check_out_file(out, overwrite, "exported result")

    py4DSTEM = _py4dstem()
    from emdfile import Metadata

    if not math.isclose(dx, dy, rel_tol=1e-9):
        warnings.warn(f"pixels are {dx:g}×{dy:g} Å; py4DSTEM's R_pixel_size holds one value, so it is set to "
                      f"{dx:g} Å (the flowtie_dask Metadata holds both)", stacklevel=2)
    rs = py4DSTEM.RealSlice(data=phase, name="phase")
    cal = rs.calibration
    cal.set_R_pixel_size(dx)
    cal.set_R_pixel_units("A")
    rs.set_dim(0, [origin[0], origin[0] + dx], units="A", name="x")
    rs.set_dim(1, [origin[1], origin[1] + dy], units="A", name="y")
    rec = Metadata(name=RECORD_NAME)
    for k, v in {
        "schema": RESULT_RECORD_SCHEMA,
        "schema_version": 1,
        "source_result": os.path.abspath(path),
        "phase_units": "rad",
        "pixel_size_A": [dx, dy],
        "origin_A": list(origin),
        "has_amplitude": amplitude is not None,
        "result_attrs_json": json.dumps(_json_safe(attrs)),
        "exporter": f"flowtie-dask {__version__}",
    }.items():
        rec[k] = v
    rs.metadata = rec
    if amplitude is not None:
        amp = py4DSTEM.RealSlice(data=amplitude, name="amplitude")
        rs.attach(amp)
    with atomic_path(out, overwrite=overwrite) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        py4DSTEM.save(tmp, rs, mode="w")
    return out


def is_scan_store(path) -> bool:
    """Whether ``path`` is a scan store (a Zarr group whose ``schema`` attribute is ``flowtie-dask/scan``).

    Parameters
    ----------
    path : str or PathLike
        Any path; missing paths and non-Zarr paths give False.

    Returns
    -------
    bool
        True for a scan store (complete or not; :func:`flowtie_dask.store.open_scan_store` validates it).
    """
    import zarr

    try:
        group = zarr.open_group(os.fspath(path), mode="r")
    except Exception:
        return False
    return group.attrs.get("schema") == SCHEMA

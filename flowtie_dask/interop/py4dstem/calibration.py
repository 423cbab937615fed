"""py4DSTEM calibrations and ``flowtie_dask`` records read into the values of a :class:`ScanMetadata`.

Scan step (R_pixel_size/units → Å), detector sampling (Q_pixel_size/units → 1/Å, mrad via the beam's
wavelength), detector rotation and flip, the calibrated origin (detector centre) and the optics that
:func:`~flowtie_dask.interop.py4dstem.export_store` records on exported DataCubes.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ...physics import wavelength
from .common import DATACUBE_RECORD_SCHEMA, RECORD_NAME, _json_safe

_R_TO_A = {"a": 1.0, "å": 1.0, "angstrom": 1.0, "angstroms": 1.0, "ang": 1.0, "nm": 10.0, "pm": 0.01,
           "um": 1e4, "µm": 1e4, "μm": 1e4}
_Q_TO_INV_A = {"a^-1": 1.0, "1/a": 1.0, "a-1": 1.0, "å^-1": 1.0, "1/å": 1.0, "å-1": 1.0, "angstrom^-1": 1.0,
               "1/angstrom": 1.0, "nm^-1": 0.1, "1/nm": 0.1, "nm-1": 0.1}
_UNCALIBRATED = {"pixels", "pixel", "px", "", "none", "unknown"}


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

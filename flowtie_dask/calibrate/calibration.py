"""Calibrating a scan store: estimate (:func:`calibrate_store`), record (:func:`record_calibration`), describe.

:func:`calibrate_store` reads the store by blocks (:mod:`.reading`) and runs the pure estimators — beam centre and
descan (:mod:`.centre`), scan–detector rotation and transpose (:mod:`.rotation`), drift of the defocused scans
(:mod:`.drift`) — and checks each result: an estimate the data do not support (a curl-ridden field, an undecided
transpose or 180°, virtual images that disagree on the drift) is a *problem*, and :func:`record_calibration` refuses
to write while there is one unless forced. Recording sets the store's ``detector_center``, ``detector_rotation``,
``detector_transpose`` and ``scan_drift`` and adds to its ``calibration`` record one entry per quantity —
``value``, ``uncertainty``, ``unit``, ``method``, ``source: "estimated from data"``, the field's ``previous`` value,
and the earlier entries of that quantity under ``history`` — in one atomic update
(:func:`flowtie_dask.store.update_scan_metadata`).
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field

import numpy as np

from .. import __version__
from ..geometry import DESCAN_MIN_PX, ReconstructionGeometry
from ..physics.constants import wavelength
from ..store import ScanMetadata, open_scan_store, update_scan_metadata
from .centre import DescanPlane, DiskFit, descan_plane, fit_bright_field_disk
from .drift import DriftFit, fit_scan_drift
from .reading import BLOCK_BYTES, focus_reductions, virtual_image_stack
from .rotation import RotationFit, fit_rotation

__all__ = ["STEPS", "Calibration", "calibrate_store", "record_calibration", "describe_calibration"]

STEPS = ("centre", "rotation", "drift")
SOURCE = "estimated from data"
#: refusal thresholds of the rotation: curl left in the best orientation, the other transpose's curl relative to
#: it, and the iCoM phase's skewness (the 180° decision)
MAX_CURL, MIN_TRANSPOSE_MARGIN, MIN_SKEWNESS = 0.25, 2.0, 0.2
METHODS = {
    "detector_center": "least-squares fit of a soft-edged disk (½·erfc edge) to the edge of the bright-field disk "
                       "of the focus scan's mean pattern, from the centre of mass of the thresholded disk",
    "bright_field_radius": "the same disk fit (not applied: the semi-angle stays as given)",
    "descan": "plane fitted by least squares to the focus scan's per-position centre of mass; reconstruct moves "
              "every pattern of the three scans back by it when it moves the beam by at least 0.1 px "
              "(detector_center holds the centre at the scan's middle)",
    "detector_rotation": "angle leaving the least curl in the focus scan's centre-of-mass field (descan plane "
                         "removed; closed form), 180° chosen by a positively skewed integrated (iCoM) phase",
    "detector_transpose": "the transpose whose best angle leaves the centre-of-mass field less curl",
    "scan_drift": "upsampled cross-correlation of virtual images against the focus scan (bright field, annular "
                  "dark field, CoM magnitude; Tukey-windowed and iterated on a non-periodic field of view), "
                  "inverse-variance mean over the images",
}


@dataclass
class Calibration:
    """What :func:`calibrate_store` estimated, and the reductions it estimated it from (for figures).

    Attributes
    ----------
    path : str
    steps : tuple of str
        Of :data:`STEPS`.
    metadata : ScanMetadata
        The store's metadata before calibration.
    focus_index : int
    disk : DiskFit
        Always fitted (the virtual detectors need it); recorded with ``"centre"``.
    descan : DescanPlane
    rotation : RotationFit or None
    drift : DriftFit or None
    mean_pattern : ndarray, shape (Qx, Qy)
    com : ndarray, shape (2, Rx, Ry)
        Centre of mass of the focus scan's patterns, detector pixels as stored.
    images : dict of name → ndarray (3, Rx, Ry), or None
        Virtual images of the three scans (with ``"drift"``).
    warnings, problems : list of str
        One line each; a problem stops :func:`record_calibration` unless forced.
    """

    path: str
    steps: tuple
    metadata: ScanMetadata
    focus_index: int
    disk: DiskFit
    descan: DescanPlane
    rotation: RotationFit | None
    drift: DriftFit | None
    mean_pattern: np.ndarray
    com: np.ndarray
    images: dict | None = None
    warnings: list = field(default_factory=list)
    problems: list = field(default_factory=list)

    def fields(self) -> dict:
        """The :class:`ScanMetadata` fields calibration sets (without the ``calibration`` record)."""
        out = {}
        if "centre" in self.steps:
            out["detector_center"] = tuple(self.disk.centre)
        if self.rotation is not None:
            out["detector_rotation"] = self.rotation.rotation
            out["detector_transpose"] = self.rotation.transpose
        if self.drift is not None:
            out["scan_drift"] = self.drift.angstrom
        return out

    def entries(self) -> dict:
        """quantity → calibration entry (without ``previous``, ``history`` and date)."""
        m, d = self.metadata, self.disk
        lam = wavelength(m.energy)
        out = {}
        if "centre" in self.steps:
            out["detector_center"] = _entry(list(d.centre), list(d.uncertainty), "px", "detector_center",
                                            edge_width_px=d.edge, threshold_centre_px=list(d.threshold_centre))
            mrad = d.radius * math.sqrt(m.detector_sampling[0] * m.detector_sampling[1]) * lam * 1e3
            out["bright_field_radius"] = _entry(d.radius, None, "px", "bright_field_radius",
                                                semiangle_mrad=mrad, applied=False)
            p = self.descan
            out["descan"] = _entry({"origin_px": list(p.origin), "slope_px_per_step": [list(s) for s in p.slope],
                                    "span_px": p.span}, {"residual_px": p.residual}, "px", "descan",
                                   applied=bool(p.span >= DESCAN_MIN_PX))
        if self.rotation is not None:
            r = self.rotation
            out["detector_rotation"] = _entry(r.rotation, r.uncertainty, "deg", "detector_rotation",
                                              curl_fraction=r.curl_fraction, icom_skewness=r.skewness)
            out["detector_transpose"] = _entry(r.transpose, None, "", "detector_transpose",
                                               curl_fraction=r.curl_fraction,
                                               curl_fraction_other=r.curl_fraction_other)
        if self.drift is not None:
            f = self.drift
            per = {name: [list(x.shift) for x in regs] for name, regs in f.per_image.items()}
            out["scan_drift"] = _entry([list(v) for v in f.angstrom], [list(v) for v in f.uncertainty], "Å",
                                       "scan_drift", steps=[list(v) for v in f.steps], per_image_steps=per,
                                       disagreement_steps=f.disagreement, tolerance_steps=f.tolerance)
        return out

    def summary(self) -> list[str]:
        """The lines ``flowtie-dask calibrate`` prints."""
        m, d = self.metadata, self.disk
        lam = wavelength(m.energy)
        lines = []
        if "centre" in self.steps:
            mrad = d.radius * math.sqrt(m.detector_sampling[0] * m.detector_sampling[1]) * lam * 1e3
            lines.append(f"beam centre    ({d.centre[0]:.3f}, {d.centre[1]:.3f}) ± ({d.uncertainty[0]:.3f}, "
                         f"{d.uncertainty[1]:.3f}) px (was ({m.detector_center[0]:g}, {m.detector_center[1]:g})); "
                         f"disk radius {d.radius:.2f} px = {mrad:.1f} mrad (semi-angle given: {m.semiangle:g} mrad)")
            p = self.descan
            lines.append(f"descan         the centre of mass moves {p.span:.3f} px over the scan (plane recorded; "
                         + ("reconstruct moves the patterns back by it)" if p.span >= DESCAN_MIN_PX else
                            f"below {DESCAN_MIN_PX} px: not applied)"))
        if self.rotation is not None:
            r = self.rotation
            lines.append(f"rotation       {r.rotation:.2f}° ± {r.uncertainty:.2f}°, transpose {r.transpose} (was "
                         f"{m.detector_rotation:g}°, {m.detector_transpose}): curl {100 * r.curl_fraction:.1f}% of "
                         f"the field (other transpose {100 * r.curl_fraction_other:.1f}%), iCoM skewness "
                         f"{r.skewness:+.2f}")
        if self.drift is not None:
            f = self.drift
            parts = []
            for s, name in enumerate(_scan_names(self.focus_index)):
                if s == self.focus_index:
                    continue
                a, u, st = f.angstrom[s], f.uncertainty[s], f.steps[s]
                parts.append(f"{name} ({a[0]:+.3f}, {a[1]:+.3f}) ± ({u[0]:.3f}, {u[1]:.3f}) Å = ({st[0]:+.2f}, "
                             f"{st[1]:+.2f}) steps")
            lines.append("drift          " + "; ".join(parts) + f"; images agree within {f.disagreement:.2f} step "
                         f"beyond their noise (tolerance {f.tolerance:g})")
        return lines


def _scan_names(focus_index: int) -> list[str]:
    return ["minus", "focus", "plus"] if focus_index == 1 else [f"scan {s}" for s in range(3)]


def _entry(value, uncertainty, unit, quantity, **extra) -> dict:
    return {"value": value, "uncertainty": uncertainty, "unit": unit, "method": METHODS[quantity], "source": SOURCE,
            **extra}


def calibrate_store(path, *, steps=STEPS, upsample: int = 100, tolerance: float = 0.25, threads: int | None = None,
                    block_bytes: int = BLOCK_BYTES) -> Calibration:
    """Estimate the beam centre, the scan–detector orientation and the drift between scans from a store's data.

    Parameters
    ----------
    path : str or PathLike
        Scan store.
    steps : iterable of str
        Any of :data:`STEPS` (default all).
    upsample : int
        Upsampling of the drift's correlation peak (precision 1/upsample scan step).
    tolerance : float
        Scan steps by which virtual images may disagree on the drift (beyond their own noise).
    threads : int, optional
        Blocks read at once.
    block_bytes : int
        Memory of one block of patterns (the store is read by blocks of scan rows).

    Returns
    -------
    Calibration
        Nothing is written (see :func:`record_calibration`).
    """
    given = (steps,) if isinstance(steps, str) else tuple(steps)
    unknown = sorted(set(given) - set(STEPS))
    if not given or unknown:
        raise ValueError(f"calibration steps must be some of {', '.join(STEPS)}, got {', '.join(map(str, given))}")
    steps = tuple(s for s in STEPS if s in given)
    if not (isinstance(upsample, int) and upsample >= 1):
        raise ValueError(f"upsample must be a positive integer, got {upsample!r}")
    if not (math.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"tolerance must be a positive number of scan steps, got {tolerance!r}")
    store = open_scan_store(path)
    m = store.metadata
    if min(store.scan_shape) < 8:
        raise ValueError(f"calibration needs a scan of at least 8×8 positions, got {store.scan_shape}")
    geometry = ReconstructionGeometry.from_metadata(m, scan_shape=store.scan_shape,
                                                    detector_shape=store.detector_shape)
    focus = geometry.focus_index
    mean, com = focus_reductions(store, focus, threads=threads, block_bytes=block_bytes)
    disk = fit_bright_field_disk(mean)
    plane = descan_plane(com)
    cal = Calibration(path=store.path, steps=steps, metadata=m, focus_index=focus, disk=disk, descan=plane,
                      rotation=None, drift=None, mean_pattern=mean, com=com)
    lam = wavelength(m.energy)
    mrad = disk.radius * math.sqrt(m.detector_sampling[0] * m.detector_sampling[1]) * lam * 1e3
    if abs(mrad / m.semiangle - 1) > 0.15:
        cal.warnings.append(f"the bright-field disk's radius, {disk.radius:.2f} px, is {mrad:.1f} mrad at the given "
                            f"detector sampling, not the given semi-angle {m.semiangle:g} mrad: check both")
    if "rotation" in steps:
        rx, ry = store.scan_shape
        ii, jj = np.meshgrid(np.arange(rx) - (rx - 1) / 2, np.arange(ry) - (ry - 1) / 2, indexing="ij")
        fitted = np.stack([p0 + s[0] * ii + s[1] * jj for p0, s in zip(plane.origin, plane.slope)])
        r = fit_rotation(com - fitted, scan_step=m.scan_step, detector_sampling=m.detector_sampling,
                         periodic=m.periodic)
        cal.rotation = r
        if r.curl_fraction > MAX_CURL:
            cal.problems.append(f"rotation: the centre-of-mass field keeps {100 * r.curl_fraction:.0f}% curl in its "
                                "best orientation (too little specimen signal, or a specimen too thick for the "
                                "curl-free criterion)")
        elif r.curl_fraction_other < MIN_TRANSPOSE_MARGIN * r.curl_fraction:
            cal.problems.append(f"rotation: the transpose is undecided (curl {100 * r.curl_fraction:.1f}% against "
                                f"{100 * r.curl_fraction_other:.1f}% for the other)")
        dq = m.detector_sampling
        quarter = r.rotation / 90.0
        if abs(quarter - round(quarter)) > 1e-9 and abs(dq[0] - dq[1]) > 1e-6 * dq[0]:
            cal.warnings.append(f"the detector's pixels are not square ({dq[0]:.5g} × {dq[1]:.5g} 1/Å): a "
                                f"reconstruction refuses a rotation of {r.rotation:.2f}° until the patterns are "
                                "resampled to square pixels")
        if r.skewness < MIN_SKEWNESS:
            cal.problems.append(f"rotation: the 180° choice is undecided (iCoM phase skewness {r.skewness:.2f} < "
                                f"{MIN_SKEWNESS:g})")
    if "drift" in steps:
        cal.images = virtual_image_stack(store, disk.centre, disk.radius, threads=threads, block_bytes=block_bytes)
        f = fit_scan_drift(cal.images, focus_index=focus, scan_step=m.scan_step, periodic=m.periodic,
                           upsample=upsample, tolerance=tolerance)
        cal.drift = f
        if not f.consistent:
            worst = "; ".join(f"{name} " + ", ".join(f"({r.shift[0]:+.2f}, {r.shift[1]:+.2f})" for s, r in
                                                      enumerate(regs) if s != focus)
                              for name, regs in f.per_image.items())
            cal.problems.append(f"drift: the virtual images disagree by {f.disagreement:.2f} scan step beyond their "
                                f"noise (tolerance {f.tolerance:g}): {worst} steps")
    return cal


def record_calibration(cal: Calibration, *, force: bool = False) -> ScanMetadata:
    """Write a calibration into its store, atomically (see the module docstring).

    Parameters
    ----------
    cal : Calibration
    force : bool
        Write even when the calibration has problems.

    Returns
    -------
    ScanMetadata
        As now written.

    Raises
    ------
    ValueError
        A problem and no ``force``: nothing is written (one line).
    """
    if cal.problems and not force:
        raise ValueError(f"{cal.problems[0]}; nothing was written (--force records it anyway, --only leaves a step "
                         "out)")
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    def change(current: ScanMetadata) -> dict:  # under the store's update lock: the record as it is now
        fields = cal.fields()
        record = dict(current.calibration)
        for quantity, entry in cal.entries().items():
            entry = {**entry, "date": date, "flowtie_dask_version": __version__}
            if quantity in fields:
                previous = getattr(current, quantity)
                entry["previous"] = [list(v) for v in previous] if quantity == "scan_drift" else (
                    list(previous) if isinstance(previous, tuple) else previous)
            if cal.problems:
                entry["forced_past"] = list(cal.problems)
            old = record.get(quantity)
            if isinstance(old, dict):
                old = dict(old)
                entry["history"] = list(old.pop("history", [])) + [old]
            record[quantity] = entry
        return {**fields, "calibration": record}

    return update_scan_metadata(cal.path, change)


def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, float)):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def describe_calibration(calibration: dict) -> list[str]:
    """One line per recorded quantity: value ± uncertainty, unit, where it came from, when, what it replaced.

    Parameters
    ----------
    calibration : dict
        A store's ``calibration`` record (:class:`ScanMetadata` ``calibration``).
    """
    lines = []
    for quantity, e in calibration.items():
        if not isinstance(e, dict):
            lines.append(f"{quantity}: {_fmt(e)}")
            continue
        text = f"{quantity} {_fmt(e.get('value'))}"
        if e.get("uncertainty") is not None:
            text += f" ± {_fmt(e['uncertainty'])}"
        if e.get("unit"):
            text += f" {e['unit']}"
        text += f" — {e.get('source', 'source not recorded')}"
        if e.get("method"):
            text += f" ({e['method'].split(' (')[0].split(', ')[0]})"
        if e.get("date"):
            text += f", {e['date']}"
        if "previous" in e:
            text += f", was {_fmt(e['previous'])}"
        if e.get("applied") is False:
            text += ", recorded only"
        if e.get("history"):
            text += f", {len(e['history'])} earlier"
        if e.get("forced_past"):
            text += " [forced past a failed check]"
        lines.append(text)
    return lines

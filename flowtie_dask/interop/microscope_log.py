"""A microscope log (JSON or YAML) as scan metadata: what a user knows from the microscope, with units.

A log is a mapping. Each quantity may be given as

* a number under a key that ends in its unit: ``"high_tension_kV": 300``, ``"scan_step_nm": 0.017``;
* a string with its unit: ``"high_tension": "300 kV"``, ``"defocus": "-2, 0, 2 nm"``;
* ``{"value": …, "unit": …}``.

Quantities and their names (aliases in brackets), converted to the store's units:

==========================  =============================================  =====================  ==========
quantity                    names                                          units                  store unit
==========================  =============================================  =====================  ==========
beam energy                 high_tension (energy, beam_energy,             V, kV, MV, eV, keV     eV
                            accelerating_voltage)
convergence semi-angle      convergence_semiangle (semiangle,              mrad, rad, deg         mrad
                            convergence_angle)
defocus of the three scans  defocus (defocus_values), three values, with   Å (A, angstrom), nm,   Å, Δf = −C10,
                            ``defocus_sign``: "positive = underfocus" or   pm, um                 positive =
                            "positive = overfocus"                                                underfocus
scan shape                  scan_shape: [Rx, Ry] (positions)               —                      —
scan step                   scan_step: one value or [sx, sy]               Å, nm, pm              Å
detector sampling           detector_angle_per_pixel                       mrad, rad (per pixel)  1/Å
                            (detector_mrad_per_pixel) or
                            detector_sampling                              1/Å, 1/nm
detector binning            detector_binning (camera binning already in    —                      recorded
                            the frames; the sampling is per stored pixel)
==========================  =============================================  =====================  ==========

A suffix ``_nominal`` on a key is accepted (``scan_step_nm_nominal``): nominal values are what a log holds;
the calibration from the data refines them. Other keys (file names, notes) are kept as provenance. Every
value is checked; what is missing or wrong is named in one line.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

from ..mapping_files import parse_mapping_text, syntax_name
from ..physics.constants import wavelength

__all__ = ["MicroscopeLog", "read_microscope_log", "parse_microscope_log"]

#: unit → factor to the store's unit, per kind of quantity
_UNITS = {
    "energy": {"ev": 1.0, "kev": 1e3, "v": 1.0, "kv": 1e3, "mv": 1e6},
    "angle": {"mrad": 1.0, "rad": 1e3, "deg": 1e3 * math.pi / 180, "urad": 1e-3},
    "length": {"a": 1.0, "å": 1.0, "angstrom": 1.0, "ang": 1.0, "nm": 10.0, "pm": 0.01, "um": 1e4, "µm": 1e4},
    "inverse_length": {"1/a": 1.0, "1/å": 1.0, "a^-1": 1.0, "å^-1": 1.0, "1/nm": 0.1, "nm^-1": 0.1},
}
_NAMES = {
    "energy": ("high_tension", "energy", "beam_energy", "accelerating_voltage"),
    "semiangle": ("convergence_semiangle", "semiangle", "convergence_angle"),
    "defocus": ("defocus", "defocus_values"),
    "scan_step": ("scan_step",),
    "detector_angle": ("detector_angle_per_pixel", "detector_mrad_per_pixel"),
    "detector_sampling": ("detector_sampling",),
}
_KIND = {"energy": "energy", "semiangle": "angle", "defocus": "length", "scan_step": "length",
         "detector_angle": "angle", "detector_sampling": "inverse_length"}
#: a number, but not the 1 of a unit such as 1/nm
_NUMBER = r"(?<![\w/^.\-])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\d./])"


@dataclass(frozen=True)
class MicroscopeLog:
    """The values of a microscope log in the store's units.

    Attributes
    ----------
    energy : float
        eV.
    semiangle : float
        mrad.
    defocus : (float, float, float)
        Δf = −C10 of the three scans in Å (positive = underfocus), in the order given.
    scan_shape : (int, int) or None
    scan_step : (float, float) or None
        Å.
    detector_sampling : (float, float) or None
        1/Å per stored detector pixel (from an angle per pixel: θ/λ).
    detector_binning : int or None
        The camera's binning, already applied in the frames (recorded only).
    extra : dict
        The log's other keys (file names, notes), kept as provenance.
    source : str
        The log's path.
    """

    energy: float
    semiangle: float
    defocus: tuple[float, float, float]
    scan_shape: tuple[int, int] | None = None
    scan_step: tuple[float, float] | None = None
    detector_sampling: tuple[float, float] | None = None
    detector_binning: int | None = None
    extra: dict = field(default_factory=dict)
    source: str = ""


def read_microscope_log(path: str) -> MicroscopeLog:
    """Read a microscope log (``.json``, ``.yaml`` or ``.yml``); see the module docstring for its keys.

    Raises
    ------
    ValueError
        One line naming the file and what is missing, unreadable or out of range.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ValueError(f"cannot read the microscope log {path!r}: {exc.strerror or exc}") from None
    try:
        data = parse_mapping_text(text, path)
    except ValueError as exc:
        raise ValueError(f"the microscope log {path!r} is not valid {syntax_name(path)}: {exc}") from None
    return parse_microscope_log(data, source=path)


def parse_microscope_log(data, *, source: str = "the microscope log") -> MicroscopeLog:
    """A :class:`MicroscopeLog` from a mapping (a parsed JSON or YAML log).

    Raises
    ------
    ValueError
        One line naming ``source`` and the key that is missing, unreadable or out of range.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping of names to values at the top, got {type(data).__name__}")
    used: set = set()

    def get(name, *, n=None, required=True):
        found = _find(data, name, source=source)
        if found is None:
            if required:
                raise ValueError(f"{source}: no {name.replace('_', ' ')} (give one of "
                                 f"{', '.join(k + '_<unit>' for k in _NAMES[name])}, e.g. "
                                 f"{_NAMES[name][0]}_{next(iter(_UNITS[_KIND[name]]))})")
            return None
        key, values, unit = found
        used.add(key)
        factor = _factor(unit, _KIND[name], key=key, source=source)
        values = [v * factor for v in values]
        if n is not None and len(values) not in n:
            raise ValueError(f"{source}: {key} needs {' or '.join(map(str, n))} value(s), got {len(values)}")
        return values

    energy = get("energy", n=(1,))[0]
    if not 10e3 <= energy <= 1.5e6:
        raise ValueError(f"{source}: beam energy {energy / 1e3:g} kV is outside 10 kV–1.5 MV; check the unit")
    semiangle = get("semiangle", n=(1,))[0]
    if not 0.1 <= semiangle <= 200:
        raise ValueError(f"{source}: convergence semi-angle {semiangle:g} mrad is outside 0.1–200 mrad; check the unit")
    defocus = get("defocus", n=(3,))
    sign = _defocus_sign(data, source=source, used=used)
    defocus = tuple(sign * d for d in defocus)
    if len(set(defocus)) != 3 or max(abs(d) for d in defocus) > 1e5:
        raise ValueError(f"{source}: the three defocus values must differ and be under 10 µm, got {defocus} Å")
    shape = None
    key = _first_key(data, ("scan_shape",))
    if key is not None:
        used.add(key)
        shape = data[key]
        if not (isinstance(shape, (list, tuple)) and len(shape) == 2 and all(isinstance(v, int) and v > 0
                                                                                for v in shape)):
            raise ValueError(f"{source}: scan_shape must be two positive whole numbers [Rx, Ry], got {shape!r}")
        shape = (int(shape[0]), int(shape[1]))
    step = get("scan_step", n=(1, 2), required=False)
    if step is not None:
        step = (step[0], step[-1])
        if not all(0 < s < 100 for s in step):
            raise ValueError(f"{source}: scan step {step} Å is outside (0, 100) Å; check the unit")
    sampling = get("detector_sampling", n=(1, 2), required=False)
    angle = get("detector_angle", n=(1, 2), required=False)
    if sampling is not None and angle is not None:
        raise ValueError(f"{source}: give the detector's angle per pixel or its sampling, not both")
    if angle is not None:
        sampling = [a * 1e-3 / wavelength(energy) for a in angle]
    if sampling is not None:
        sampling = (sampling[0], sampling[-1])
        if not all(0 < s < 10 for s in sampling):
            raise ValueError(f"{source}: detector sampling {sampling} 1/Å is outside (0, 10) 1/Å; check the unit")
    binning = None
    key = _first_key(data, ("detector_binning", "binning"))
    if key is not None:
        used.add(key)
        binning = data[key]
        if not (isinstance(binning, int) and binning >= 1):
            raise ValueError(f"{source}: {key} must be a whole number ≥ 1, got {binning!r}")
    extra = {k: v for k, v in data.items() if k not in used}
    return MicroscopeLog(energy=float(energy), semiangle=float(semiangle), defocus=defocus, scan_shape=shape,
                         scan_step=step, detector_sampling=sampling, detector_binning=binning, extra=extra,
                         source=source)


def _first_key(data, names):
    for name in names:
        for key in (name, f"{name}_nominal"):
            if key in data:
                return key
    return None


def _find(data, name, *, source):
    """(key, values, unit) of a quantity, or None: the unit from the key's suffix (a known unit of the
    quantity's kind; other suffixes are other quantities), the value's text, or a {"value", "unit"} mapping."""
    table = _UNITS[_KIND[name]]
    for base in _NAMES[name]:
        for key, value in data.items():
            stem = key[:-len("_nominal")] if key.endswith("_nominal") else key
            if stem == base:
                unit = "mrad" if base == "detector_mrad_per_pixel" else None
            elif stem.startswith(base + "_") and _norm(stem[len(base) + 1:]) in table:
                unit = stem[len(base) + 1:]
            else:
                continue
            values, text_unit = _values(value, key=key, source=source)
            if unit is not None and text_unit is not None and _norm(unit) != _norm(text_unit):
                raise ValueError(f"{source}: {key} says {unit} in its name and {text_unit} in its value")
            unit = unit or text_unit
            if unit is None:
                raise ValueError(f"{source}: {key} has no unit: add it to the name ({base}_<unit>) or the value "
                                 f"(\"{value} <unit>\")")
            return key, values, unit
    return None


def _norm(unit: str) -> str:
    return unit.strip().lower().replace("angstroms", "angstrom")


def _values(value, *, key, source):
    """Numbers and the unit written with them (or None)."""
    if isinstance(value, dict):
        if "value" not in value:
            raise ValueError(f"{source}: {key} is a mapping without 'value'")
        numbers, _ = _values(value["value"], key=key, source=source)
        return numbers, value.get("unit")
    if isinstance(value, bool):
        raise ValueError(f"{source}: {key} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        numbers = [float(value)]
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                             for v in value):
        numbers = [float(v) for v in value]
    elif isinstance(value, str):
        found = re.findall(_NUMBER, value)
        unit = re.sub(_NUMBER, " ", value).replace(",", " ").split()
        if not found or len(unit) > 1:
            raise ValueError(f"{source}: cannot read {key} = {value!r} as numbers with one unit")
        return [float(v) for v in found], (unit[0] if unit else None)
    else:
        raise ValueError(f"{source}: {key} must be a number, a list of numbers or a text with a unit, got {value!r}")
    if not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"{source}: {key} has a non-finite value {value!r}")
    return numbers, None


def _factor(unit, kind, *, key, source):
    table = _UNITS[kind]
    u = _norm(unit)
    if u not in table:
        raise ValueError(f"{source}: {key} has the unit {unit!r}; use one of {', '.join(sorted(table))}")
    return table[u]


def _defocus_sign(data, *, source, used):
    key = _first_key(data, ("defocus_sign", "defocus_convention"))
    if key is None:
        raise ValueError(f"{source}: say which sign the defocus values have: defocus_sign \"positive = underfocus\" "
                         "(Δf = −C10) or \"positive = overfocus\" (C10)")
    used.add(key)
    text = str(data[key]).lower().replace(" ", "")
    if "positive=underfocus" in text or text in ("underfocus", "-c10", "deltaf"):
        return 1.0
    if "positive=overfocus" in text or text in ("overfocus", "c10"):
        return -1.0
    raise ValueError(f"{source}: defocus_sign {data[key]!r} is neither \"positive = underfocus\" nor "
                     "\"positive = overfocus\"")

"""Scan-store metadata: the schema constants, :class:`ScanStoreError`, :class:`ScanMetadata` and chunking defaults.

:class:`ScanMetadata` holds everything a reconstruction needs to know about a scan in the package's units and
converts to and from the store's group attributes (:meth:`ScanMetadata.to_attrs`, :meth:`ScanMetadata.from_attrs`).
:func:`default_chunks` picks the scan-position chunk; ``_compressors`` the codecs of every array (Blosc/Zstd, then a
CRC-32C per chunk).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from ..pairs import pair
from ..physics.constants import wavelength
from ..physics.optics import DEFOCUS_CONVENTION

__all__ = ["SCHEMA", "SCHEMA_VERSION", "UNITS", "INTENSITY_NORMALIZATION", "ScanStoreError", "ScanMetadata",
           "default_chunks"]

SCHEMA = "flowtie-dask/scan"
SCHEMA_VERSION = 2  # 2: crc32c per chunk and every chunk on disk; 1 (no checksums) is still read
UNITS = {
    "energy": "eV",
    "semiangle": "mrad",
    "defocus": "Å",
    "scan_step": "Å",
    "detector_sampling": "1/Å",
    "projected_phase": "rad",
    "aberrations": "Å (angles in rad)",
}
INTENSITY_NORMALIZATION = "fraction of the incident beam per pixel (an uncropped pattern sums to 1)"


class ScanStoreError(ValueError):
    """A scan store is missing, incomplete or inconsistent (one-line message)."""


def _pair(value, name) -> tuple[float, float]:
    """:func:`flowtie_dask.pairs.pair` raising :class:`ScanStoreError` (kept importable from ``store``)."""
    return pair(value, name=name, error=ScanStoreError)


@dataclass(frozen=True)
class ScanMetadata:
    """Everything a reconstruction needs to know about a scan, in the package's units.

    Attributes
    ----------
    energy : float
        Beam energy in eV.
    semiangle : float
        Convergence semi-angle in mrad.
    defocus : tuple of 3 floats
        Defocus Δf = −C10 of the three scans in Å, in the order of ``intensity``'s first axis.
    scan_step : (float, float)
        Scan step along Rx and Ry in Å.
    detector_sampling : (float, float)
        Detector pixel size along Qx and Qy in 1/Å.
    detector_center : (float, float)
        Pixel of the unscattered beam's centre (zero frequency); N//2 for centred patterns.
    detector_rotation : float
        Rotation of the detector axes relative to the scan axes in degrees.
    detector_transpose : bool
        True when the detector axes are swapped relative to the scan axes.
    aberrations : dict
        Other aberrations of the probe: ``C12`` (Å), ``phi12`` (rad), ``C30`` (Å).
    aperture_edge : float
        Soft aperture edge width in mrad (0 = hard).
    scan_origin : (float, float)
        Position of the first scan point in Å.
    periodic : bool
        True when the scan covers whole periods of a periodic specimen.
    provenance : dict
        Free-form record of where the data came from (simulator parameters, source files …).
    scan_drift : three (float, float)
        Where each scan lies against the focus scan, in Å along Rx and Ry, in the order of ``intensity``'s first
        axis: scan position (i, j) of scan s sees the specimen at focus-scan position (i, j) + ``scan_drift[s]``
        (the focus scan's own entry is (0, 0)). Zero: the three scans share one grid.
    calibration : dict
        What was estimated from the data (``flowtie-dask calibrate``): quantity → {"value", "uncertainty",
        "method", "source": "estimated from data"}; empty when nothing was.
    """

    energy: float
    semiangle: float
    defocus: tuple[float, float, float]
    scan_step: tuple[float, float]
    detector_sampling: tuple[float, float]
    detector_center: tuple[float, float]
    detector_rotation: float = 0.0
    detector_transpose: bool = False
    aberrations: dict = field(default_factory=dict)
    aperture_edge: float = 0.0
    scan_origin: tuple[float, float] = (0.0, 0.0)
    periodic: bool = False
    provenance: dict = field(default_factory=dict)
    scan_drift: tuple = ((0.0, 0.0), (0.0, 0.0), (0.0, 0.0))
    calibration: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "scan_step", _pair(self.scan_step, "scan_step"))
        object.__setattr__(self, "detector_sampling", _pair(self.detector_sampling, "detector_sampling"))
        object.__setattr__(self, "detector_center", _pair(self.detector_center, "detector_center"))
        object.__setattr__(self, "scan_origin", _pair(self.scan_origin, "scan_origin"))
        try:
            defocus = tuple(float(x) for x in self.defocus)
        except (TypeError, ValueError):
            raise ScanStoreError(f"defocus must be three numbers in Å, got {self.defocus!r}") from None
        object.__setattr__(self, "defocus", defocus)
        try:
            drift = tuple(_pair(d, "scan_drift") for d in self.scan_drift)
        except TypeError:
            raise ScanStoreError(f"scan_drift must be three (x, y) pairs in Å, got {self.scan_drift!r}") from None
        if len(drift) != 3 or not all(math.isfinite(v) for d in drift for v in d):
            raise ScanStoreError(f"scan_drift must be three finite (x, y) pairs in Å, got {self.scan_drift!r}")
        object.__setattr__(self, "scan_drift", drift)
        self.check()

    def check(self) -> None:
        """Raise :class:`ScanStoreError` for values no microscope produces (the message gives the plausible range).

        Plausible: energy 10 keV–3 MeV, semi-angle 0.1–200 mrad, |Δf| ≤ 1e5 Å with a defocus step (half the
        span of the three values) ≥ 0.1 Å, scan step 0.001–1000 Å, one detector pixel 0.001–50 mrad
        (sampling × λ), a finite detector centre.
        """
        if not (math.isfinite(self.energy) and self.energy > 0):
            raise ScanStoreError(f"energy must be a positive number of eV, got {self.energy!r}")
        if not 10e3 <= self.energy <= 3e6:
            raise ScanStoreError(f"energy {self.energy:g} eV is outside the plausible range 10 keV–3 MeV "
                                 "(10000–3000000 eV); give the beam energy in eV, e.g. 300000")
        if not (math.isfinite(self.semiangle) and self.semiangle > 0):
            raise ScanStoreError(f"semiangle must be a positive number of mrad, got {self.semiangle!r}")
        if not 0.1 <= self.semiangle <= 200:
            raise ScanStoreError(f"semiangle {self.semiangle:g} mrad is outside the plausible range 0.1–200 mrad; "
                                 "give the convergence semi-angle in mrad, e.g. 20")
        if len(self.defocus) != 3 or len(set(self.defocus)) != 3:
            raise ScanStoreError(f"defocus must be three distinct values in Å (−Δz, 0, +Δz), got {self.defocus!r}")
        for d in self.defocus:
            if not (math.isfinite(d) and abs(d) <= 1e5):
                raise ScanStoreError(f"defocus {d:g} Å is outside the plausible range |Δf| ≤ 1e5 Å (10 µm); "
                                     "give the three defocus values in Å, e.g. -20 0 20")
        step = (max(self.defocus) - min(self.defocus)) / 2
        if step < 0.1:
            raise ScanStoreError(f"defocus step {step:g} Å (half the span of {list(self.defocus)}) is below the "
                                 "plausible minimum 0.1 Å; give the defocus values in Å, e.g. -20 0 20")
        if not all(math.isfinite(v) and v > 0 for v in self.scan_step):
            raise ScanStoreError(f"scan_step must be positive Å, got {self.scan_step!r}")
        for v in self.scan_step:
            if not 1e-3 <= v <= 1e3:
                raise ScanStoreError(f"scan_step {v:g} Å is outside the plausible range 0.001–1000 Å; "
                                     "give the scan step in Å, e.g. 0.2")
        if not all(math.isfinite(v) and v > 0 for v in self.detector_sampling):
            raise ScanStoreError(f"detector_sampling must be positive 1/Å, got {self.detector_sampling!r}")
        lam = wavelength(self.energy)
        for v in self.detector_sampling:
            mrad = v * lam * 1e3
            if not 1e-3 <= mrad <= 50:
                raise ScanStoreError(
                    f"detector_sampling {v:g} 1/Å is {mrad:.3g} mrad per pixel at {self.energy / 1e3:g} kV, outside "
                    f"the plausible range 0.001–50 mrad per pixel; give the sampling in 1/Å (mrad per pixel "
                    f"/ 1000 / λ, λ = {lam:.5f} Å), e.g. {0.5e-3 / lam:.4g} for 0.5 mrad per pixel")
        if not all(math.isfinite(v) for v in self.detector_center):
            raise ScanStoreError(f"detector_center must be two finite pixel coordinates, got {self.detector_center!r}")
        unknown = set(self.aberrations) - {"C12", "phi12", "C30"}
        if unknown:
            raise ScanStoreError(f"unknown aberrations {sorted(unknown)}: only C12, phi12 and C30 are supported")

    @property
    def c10(self) -> tuple[float, float, float]:
        """C10 = −Δf of the three scans in Å."""
        return tuple(-d for d in self.defocus)

    def to_attrs(self) -> dict[str, Any]:
        """JSON attributes written to the store (names carry their units)."""
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "energy_eV": self.energy,
            "semiangle_mrad": self.semiangle,
            "defocus_A": list(self.defocus),
            "defocus_convention": DEFOCUS_CONVENTION,
            "c10_A": list(self.c10),
            "aberrations_A": {k: float(v) for k, v in self.aberrations.items()},
            "aperture_edge_mrad": self.aperture_edge,
            "scan_step_A": list(self.scan_step),
            "scan_origin_A": list(self.scan_origin),
            "detector_sampling_invA": list(self.detector_sampling),
            "detector_centered": True,
            "detector_center_px": list(self.detector_center),
            "detector_rotation_deg": self.detector_rotation,
            "detector_transpose": self.detector_transpose,
            "intensity_normalization": INTENSITY_NORMALIZATION,
            "periodic": self.periodic,
            "scan_drift_A": [list(d) for d in self.scan_drift],
            "calibration": self.calibration,
            "units": UNITS,
            "provenance": self.provenance,
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> "ScanMetadata":
        """Read and check attributes written by :meth:`to_attrs`."""
        required = [
            "energy_eV", "semiangle_mrad", "defocus_A", "defocus_convention", "scan_step_A",
            "detector_sampling_invA", "detector_center_px",
        ]
        for key in required:
            if key not in attrs:
                raise ScanStoreError(f"scan store attribute {key!r} is missing; rewrite the store with flowtie-dask")
        if attrs["defocus_convention"] != DEFOCUS_CONVENTION:
            raise ScanStoreError(
                f"defocus convention {attrs['defocus_convention']!r} is not {DEFOCUS_CONVENTION!r}; "
                "convert the defocus values and rewrite the store"
            )
        return cls(
            energy=float(attrs["energy_eV"]),
            semiangle=float(attrs["semiangle_mrad"]),
            defocus=tuple(attrs["defocus_A"]),
            scan_step=attrs["scan_step_A"],
            detector_sampling=attrs["detector_sampling_invA"],
            detector_center=attrs["detector_center_px"],
            detector_rotation=float(attrs.get("detector_rotation_deg", 0.0)),
            detector_transpose=bool(attrs.get("detector_transpose", False)),
            aberrations=dict(attrs.get("aberrations_A", {})),
            aperture_edge=float(attrs.get("aperture_edge_mrad", 0.0)),
            scan_origin=attrs.get("scan_origin_A", (0.0, 0.0)),
            periodic=bool(attrs.get("periodic", False)),
            provenance=dict(attrs.get("provenance", {})),
            scan_drift=tuple(tuple(d) for d in attrs.get("scan_drift_A", ((0.0, 0.0),) * 3)),
            calibration=dict(attrs.get("calibration", {})),
        )

    def replace(self, **changes) -> "ScanMetadata":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


def default_chunks(scan_shape: tuple[int, int], detector_shape: tuple[int, int], *, itemsize: int = 4,
                   target_bytes: int = 8 * 2**20) -> tuple[int, int]:
    """Scan-position chunk (cx, cy) giving chunks of about ``target_bytes`` (a power of two per side).

    Parameters
    ----------
    scan_shape : (Rx, Ry)
    detector_shape : (Qx, Qy)
    itemsize : int
        Bytes per value.

    Returns
    -------
    (cx, cy) : tuple of int
        Never larger than the scan.
    """
    per_pattern = detector_shape[0] * detector_shape[1] * itemsize
    side = max(1, int(math.sqrt(max(1, target_bytes // per_pattern))))
    side = 2 ** int(math.log2(side))
    return min(side, scan_shape[0]), min(side, scan_shape[1])


#: Codec layouts of the intensity array: Blosc (codec, level, shuffle), then a CRC-32C of the compressed bytes.
#: "fast" decodes 4–6× faster than "default" on one thread (benchmarks/store_codecs.py: float32 patterns
#: 3.7 against 20.8 µs per 64×64 frame at the same 2.6–2.7× ratio; uint16 counts 1.3 against 5.5 µs at
#: 12× against 17×); "default" stays the writers' default (smaller count stores).
CODECS = {"default": ("zstd", 3, "bitshuffle"), "fast": ("lz4", 5, "shuffle")}


def _compressors(codec: str = "default"):
    """Blosc (``CODECS[codec]``) then a CRC-32C of the compressed bytes (a corrupt chunk fails to decode)."""
    from zarr.codecs import BloscCodec, BloscShuffle, Crc32cCodec

    if codec not in CODECS:
        raise ScanStoreError(f"unknown store codec {codec!r}: use one of {', '.join(CODECS)}")
    cname, clevel, shuffle = CODECS[codec]
    return [BloscCodec(cname=cname, clevel=clevel, shuffle=BloscShuffle(shuffle)), Crc32cCodec()]

"""The scan store: one Zarr v3 group per defocus series (DESIGN §5).

Layout::

    scan.zarr/
      intensity            (3, Rx, Ry, Qx, Qy) float32 or uint16, chunks (1, cx, cy, Qx, Qy), Blosc/Zstd
      truth/               only for simulated scans
        projected_phase    (Nx, Ny) float32, σ·Σ v_z in rad on the object grid
        probe_frame_phase  (Rx, Ry, Qx, Qy) float32, arg Ψ at focus (on request, for training)

Group attributes hold the optics, the defocus values with their convention, the scan step, the
detector sampling and orientation, units and a schema version (see :class:`ScanMetadata`).
:func:`open_scan_store` is the one entry point that reads and validates a store; every error it
raises is a :class:`ScanStoreError` with one line naming what is wrong and what to do.

Writers go through :func:`write_scan_store`, which builds the store in a hidden sibling folder and
renames it into place only when complete, so a failed run never leaves a store that looks valid.

Integrity (schema version 2): every chunk carries a CRC-32C of its compressed bytes (``crc32c`` codec after
Blosc) and every chunk is on disk, all-zero ones included. So a chunk lost in a copy is found when the store is
opened (one directory walk, no data read), a corrupt one when it is read: :func:`read_block` (the picklable reader
the Dask tasks use) names the chunk key and the scan positions it holds, and :func:`check_scan_store`
(``flowtie-dask info --check``) reads every chunk once and lists each bad one. Schema-1 stores (no checksums)
are still read.
"""

from __future__ import annotations

import contextlib
import math
import os
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import numpy as np

from .physics.optics import DEFOCUS_CONVENTION

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "ScanStoreError",
    "ScanMetadata",
    "ScanStore",
    "default_chunks",
    "write_scan_store",
    "write_truth",
    "open_scan_store",
    "validate_scan_store",
    "read_block",
    "BadChunk",
    "StoreCheck",
    "check_scan_store",
]

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
    try:
        v = tuple(float(x) for x in (value if np.ndim(value) else (value, value)))
    except (TypeError, ValueError):
        raise ScanStoreError(f"{name} must be one or two numbers, got {value!r}") from None
    if len(v) != 2:
        raise ScanStoreError(f"{name} must be one or two numbers, got {value!r}")
    return v


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
        self.check()

    def check(self) -> None:
        """Raise :class:`ScanStoreError` for values no microscope produces (the message gives the plausible range).

        Plausible: energy 10 keV–3 MeV, semi-angle 0.1–200 mrad, |Δf| ≤ 1e5 Å with a defocus step (half the
        span of the three values) ≥ 0.1 Å, scan step 0.001–1000 Å, one detector pixel 0.001–50 mrad
        (sampling × λ), a finite detector centre.
        """
        from .physics.constants import wavelength

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


def _compressors():
    """Blosc/Zstd with bit shuffle, then a CRC-32C of the compressed bytes (a corrupt chunk fails to decode)."""
    from zarr.codecs import BloscCodec, BloscShuffle, Crc32cCodec

    return [BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.bitshuffle), Crc32cCodec()]


# ----------------------------------------------------------------------------------------------------------------
# Chunks on disk: keys, positions, presence
# ----------------------------------------------------------------------------------------------------------------

_AXIS_NAMES = {5: ("defocus", "Rx", "Ry", "Qx", "Qy"), 4: ("Rx", "Ry", "Qx", "Qy"), 2: ("x", "y")}
_FIX = ("copy it again from the source or re-import it; 'flowtie-dask info --check {path}' lists every bad chunk")


def _array_name(array) -> str:
    """The array's name inside its store ('intensity', 'truth/probe_frame_phase'), for messages."""
    if array.path:
        return str(array.path).strip("/")
    root = getattr(array.store, "root", None)
    return os.path.basename(os.fspath(root)) if root is not None else "intensity"


def _store_path_of(array) -> str:
    """The folder of the scan store holding ``array`` (for messages), or the store's description."""
    root = getattr(array.store, "root", None)
    if root is None:
        return str(array.store)
    root = os.fspath(root)
    if not array.path:  # opened as PATH/intensity
        return os.path.dirname(root.rstrip(os.sep)) or root
    return root


def _object_shape(array) -> tuple[int, ...]:
    """Shape of one stored object (a shard when the array is sharded, else a chunk)."""
    return tuple(int(v) for v in (getattr(array, "shards", None) or array.chunks))


def _chunk_grid(array) -> tuple[int, ...]:
    return tuple(max(1, math.ceil(n / c)) for n, c in zip(array.shape, _object_shape(array)))


def _chunk_key(array, coords) -> str:
    """The store key of the chunk at grid ``coords``, relative to the array, in the array's own encoding."""
    return array.metadata.encode_chunk_key(tuple(int(c) for c in coords))


def _chunk_region(array, coords) -> tuple[slice, ...]:
    cs = _object_shape(array)
    return tuple(slice(c * s, min((c + 1) * s, n)) for c, s, n in zip(coords, cs, array.shape))


def _chunk_where(array, coords) -> str:
    """The scan positions a chunk holds, e.g. 'defocus index 1, Rx 4–7, Ry 0–3'."""
    names = tuple(getattr(array.metadata, "dimension_names", None) or ()) or _AXIS_NAMES.get(array.ndim, ())
    if len(names) != array.ndim:
        names = tuple(f"axis {i}" for i in range(array.ndim))
    parts = []
    for name, sl, n in zip(names, _chunk_region(array, coords), array.shape):
        lo, hi = sl.start, sl.stop - 1
        span = f"{lo}" if lo == hi else f"{lo}–{hi}"
        if name == "defocus":
            parts.append(f"defocus index {span}" if lo == hi else f"defocus indices {span}")
        elif name in ("Rx", "Ry", "x", "y") or (lo, hi) != (0, n - 1):
            parts.append(f"{name} {span}")
    return ", ".join(parts)


def _stored_keys(array) -> set[str] | None:
    """Keys (relative to the array) of every object stored under the array: one directory walk, no data read.

    None when the store cannot be listed.
    """
    root = getattr(array.store, "root", None)
    if root is not None:
        base = os.path.join(os.fspath(root), *str(array.path).split("/")) if array.path else os.fspath(root)
        keys = set()
        for d, _, files in os.walk(base):
            rel = os.path.relpath(d, base)
            prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            keys.update(prefix + f for f in files)
        return keys
    try:  # another kind of store: its list API
        from zarr.core.sync import sync

        prefix = f"{array.path}/" if array.path else ""

        async def collect():
            return [k async for k in array.store.list_prefix(prefix)]

        return {k[len(prefix):] for k in sync(collect())}
    except Exception:  # pragma: no cover - exotic stores
        return None


def _missing_chunks(array) -> tuple[list[tuple[int, ...]], int]:
    """(grid coordinates of every chunk not on disk, number of chunks). Empty when the store cannot be listed."""
    import itertools

    grid = _chunk_grid(array)
    total = math.prod(grid)
    present = _stored_keys(array)
    if present is None:
        return [], total
    missing = [c for c in itertools.product(*(range(g) for g in grid)) if _chunk_key(array, c) not in present]
    return missing, total


def _fill_missing_chunks(array) -> None:
    """Write the fill value into every chunk not on disk (so that a missing chunk always means a lost one)."""
    missing, _ = _missing_chunks(array)
    if not missing:
        return
    full = array.with_config({"write_empty_chunks": True})
    for coords in missing:
        region = _chunk_region(array, coords)
        full[region] = np.full(tuple(sl.stop - sl.start for sl in region), array.fill_value, dtype=array.dtype)


def _decode_problem(exc: BaseException) -> str:
    """A short description of why a chunk does not decode."""
    text = (str(exc).splitlines() or [""])[0].strip()
    if "checksum" in text.lower():
        return "corrupt (CRC-32C checksum mismatch)"
    if "blosc" in text.lower() or "decompress" in text.lower():
        return f"corrupt (does not decompress: {text[:100]})"
    if "reshape" in text.lower() or "size" in text.lower():
        return f"corrupt (decodes to the wrong size: {text[:100]})"
    return f"unreadable ({type(exc).__name__}: {text[:100]})"


@dataclass
class ScanStore:
    """An opened, validated scan store (read-only views of its arrays).

    Attributes
    ----------
    path : str
    group : zarr.Group
    intensity : zarr.Array, shape (3, Rx, Ry, Qx, Qy)
    metadata : ScanMetadata
    truth : zarr.Group or None
    """

    path: str
    group: Any
    intensity: Any
    metadata: ScanMetadata
    truth: Any = None

    @property
    def scan_shape(self) -> tuple[int, int]:
        """(Rx, Ry) scan positions."""
        return tuple(self.intensity.shape[1:3])

    @property
    def detector_shape(self) -> tuple[int, int]:
        """(Qx, Qy) detector pixels."""
        return tuple(self.intensity.shape[3:5])

    def describe(self) -> str:
        """A human-readable multi-line summary (what ``flowtie-dask info`` prints)."""
        from .physics.constants import wavelength

        m, a = self.metadata, self.intensity
        lam = wavelength(m.energy)
        stored = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(self.path) for f in fs)
        raw = a.nbytes
        q_max = [(n - c) * s for n, c, s in zip(self.detector_shape, m.detector_center, m.detector_sampling)]
        try:
            checksummed = any(c.to_dict().get("name") == "crc32c" for c in a.compressors)
        except Exception:  # noqa: BLE001 - a description, not a check
            checksummed = False
        lines = [
            f"scan store     {self.path}",
            f"intensity      {tuple(a.shape)} {a.dtype}, chunks {tuple(a.chunks)}, "
            f"{raw / 2**20:.1f} MiB raw, {stored / 2**20:.1f} MiB on disk ({raw / max(stored, 1):.1f}x), "
            + ("CRC-32C per chunk" if checksummed else "no checksums (an older store)"),
            f"optics         {m.energy / 1e3:g} kV (λ = {lam:.6f} Å), semi-angle {m.semiangle:g} mrad, "
            f"aperture edge {m.aperture_edge:g} mrad, aberrations {m.aberrations or 'none'}",
            f"defocus        Δf = {', '.join(f'{d:g}' for d in m.defocus)} Å ({DEFOCUS_CONVENTION})",
            f"scan           {self.scan_shape[0]}×{self.scan_shape[1]} positions, step "
            f"{m.scan_step[0]:.4f}×{m.scan_step[1]:.4f} Å, origin {m.scan_origin} Å, periodic {m.periodic}",
            f"detector       {self.detector_shape[0]}×{self.detector_shape[1]} px, "
            f"{m.detector_sampling[0]:.5f}×{m.detector_sampling[1]:.5f} 1/Å "
            f"({m.detector_sampling[0] * lam * 1e3:.3f} mrad/px), centre {m.detector_center}, "
            f"max {min(q_max) * lam * 1e3:.1f} mrad, rotation {m.detector_rotation:g}°, transpose {m.detector_transpose}",
        ]
        if self.truth is not None:
            pp = self.truth["projected_phase"]
            extra = ", probe_frame_phase" if "probe_frame_phase" in self.truth else ""
            lines.append(f"truth          projected_phase {tuple(pp.shape)} at {pp.attrs['pixel_size_A']} Å{extra}")
        src = m.provenance
        if src:
            keys = ("simulator", "material", "thickness_A", "n_slices", "frozen_phonons", "dose_e_per_A2", "source")
            lines.append("provenance     " + ", ".join(f"{k}={src[k]}" for k in keys if k in src))
        return "\n".join(lines)

    def to_dask(self):
        """The intensity as a dask array chunked like the store, shape (3, Rx, Ry, Qx, Qy)."""
        import dask.array as da

        return da.from_zarr(self.intensity)


def _fail(msg: str):
    raise ScanStoreError(msg)


def _is_group(node) -> bool:
    import zarr

    return isinstance(node, zarr.Group)


def validate_scan_store(group, *, path: str = "the store", check_chunks: bool = True) -> ScanStore:
    """Check a Zarr group against the scan-store schema.

    Parameters
    ----------
    group : zarr.Group
    path : str
        Name used in error messages.
    check_chunks : bool
        Also list the chunk keys of ``intensity`` on disk (one directory walk, no data read) and refuse a store
        with any chunk missing. :func:`check_scan_store` (``flowtie-dask info --check``) turns this off to list
        every bad chunk itself.

    Returns
    -------
    ScanStore

    Raises
    ------
    ScanStoreError
        One line naming the first problem found.
    """
    attrs = dict(group.attrs)
    if attrs.get("schema") != SCHEMA:
        _fail(f"{path} is a Zarr group but not a flowtie-dask scan store (no schema {SCHEMA!r}); "
              "create one with 'flowtie-dask simulate' or 'flowtie-dask import'")
    version = attrs.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        _fail(f"{path} has scan-store schema version {version!r}; this flowtie-dask reads up to "
              f"{SCHEMA_VERSION}: upgrade flowtie-dask")
    if not attrs.get("complete", False):
        _fail(f"{path} is incomplete (a write was interrupted); write it again")
    if "intensity" not in group:
        _fail(f"{path} has no 'intensity' array")
    inten = group["intensity"]
    if _is_group(inten):
        _fail(f"{path}: 'intensity' is a Zarr group, not an array: store the series as one array 'intensity' of "
              "shape (3, Rx, Ry, Qx, Qy), e.g. with 'flowtie-dask import'")
    if inten.ndim != 5 or inten.shape[0] != 3:
        _fail(f"{path}: intensity must have shape (3, Rx, Ry, Qx, Qy), got {tuple(inten.shape)}")
    if not (np.issubdtype(inten.dtype, np.floating) or np.issubdtype(inten.dtype, np.unsignedinteger)):
        _fail(f"{path}: intensity dtype {inten.dtype} is neither float nor unsigned integer")
    if min(inten.shape) < 1:
        _fail(f"{path}: intensity is empty, shape {tuple(inten.shape)}")
    meta = ScanMetadata.from_attrs(attrs)
    qx, qy = inten.shape[3:5]
    cx, cy = meta.detector_center
    if not (0 <= cx < qx and 0 <= cy < qy):
        _fail(f"{path}: detector centre {meta.detector_center} lies outside the {qx}×{qy} detector")
    truth = group["truth"] if "truth" in group else None
    if truth is not None:
        if not _is_group(truth):
            _fail(f"{path}: 'truth' is a Zarr array, not a group holding 'projected_phase'")
        if "projected_phase" not in truth:
            _fail(f"{path}: truth group has no 'projected_phase'")
        pp = truth["projected_phase"]
        if _is_group(pp) or pp.ndim != 2 or "pixel_size_A" not in pp.attrs or "origin_A" not in pp.attrs:
            _fail(f"{path}: truth/projected_phase must be 2D with 'pixel_size_A' and 'origin_A' attributes")
        if "probe_frame_phase" in truth:
            pf = truth["probe_frame_phase"]
            if _is_group(pf):
                _fail(f"{path}: truth/probe_frame_phase is a Zarr group, not an array")
            if tuple(pf.shape) != tuple(inten.shape[1:]):
                _fail(f"{path}: truth/probe_frame_phase shape {tuple(pf.shape)} "
                      f"does not match the scan {tuple(inten.shape[1:])}")
    if check_chunks:
        missing, total = _missing_chunks(inten)
        if missing:
            first = missing[0]
            legacy = (" (stores of schema version 1 omitted all-zero chunks; if this scan really had a blank "
                      "region, write it again with this flowtie-dask)") if version < 2 else ""
            _fail(f"scan store {path!r} is incomplete: chunk {_array_name(inten)}/{_chunk_key(inten, first)} "
                  f"({_chunk_where(inten, first)}) is missing, {len(missing)} of {total} intensity chunks missing "
                  f"in all{legacy}; " + _FIX.format(path=path))
    return ScanStore(path=path, group=group, intensity=inten, metadata=meta, truth=truth)


def open_scan_store(path: str | os.PathLike, *, check_chunks: bool = True) -> ScanStore:
    """Open and validate a scan store read-only.

    Parameters
    ----------
    path : str or PathLike
        Folder of the Zarr v3 group.
    check_chunks : bool
        Refuse a store with an intensity chunk missing on disk (see :func:`validate_scan_store`).

    Returns
    -------
    ScanStore

    Raises
    ------
    ScanStoreError
        When the path is missing, is not a Zarr group, or fails :func:`validate_scan_store`.
    """
    import zarr

    path = os.fspath(path)
    give = "give the folder written by 'flowtie-dask simulate' or 'flowtie-dask import'"
    if not os.path.exists(path):
        _fail(f"scan store {path!r} does not exist")
    if os.path.isfile(path):
        _fail(f"{path!r} is a file, not a scan store (a Zarr group folder); {give}")
    if os.path.isdir(path) and not any(os.path.exists(os.path.join(path, n)) for n in ("zarr.json", ".zgroup")):
        _fail(f"{path!r} exists but is not a Zarr group (no zarr.json); {give}")
    try:
        node = zarr.open(path, mode="r")
    except Exception as exc:
        _fail(f"{path!r} is not a readable Zarr group ({type(exc).__name__}: "
              f"{(str(exc).splitlines() or [''])[0][:120]}); {give}")
    if not _is_group(node):
        _fail(f"{path!r} is a Zarr array, not a group; {give}")
    return validate_scan_store(node, path=path, check_chunks=check_chunks)


@contextlib.contextmanager
def write_scan_store(
    path: str | os.PathLike,
    metadata: ScanMetadata,
    *,
    scan_shape: tuple[int, int],
    detector_shape: tuple[int, int],
    chunks: tuple[int, int] | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
) -> Iterator[Any]:
    """Create a scan store atomically; yields the Zarr group to fill.

    The group is built in a hidden sibling folder; when the ``with`` block ends without an error
    it is marked complete and renamed to ``path`` (replacing an old store only with
    ``overwrite=True``). On an error the partial folder is removed and ``path`` is untouched.

    Parameters
    ----------
    path : str or PathLike
        Destination folder (conventionally ``*.zarr``).
    metadata : ScanMetadata
    scan_shape : (Rx, Ry)
    detector_shape : (Qx, Qy)
    chunks : (cx, cy), optional
        Scan positions per chunk; :func:`default_chunks` when omitted.
    dtype : {"float32", "uint16"}
    overwrite : bool

    Yields
    ------
    zarr.Group
        With an empty ``intensity`` array of shape (3, Rx, Ry, Qx, Qy), chunks (1, cx, cy, Qx, Qy), compressed
        with Blosc/Zstd and a CRC-32C per chunk. Chunks left unwritten (or written all-zero by a writer that
        dropped empty chunks) are written as zeros before the store is marked complete, so every chunk is on
        disk and a missing one is detected when the store is opened.
    """
    import zarr

    from .atomic import atomic_path, check_output

    if dtype not in ("float32", "uint16"):
        _fail(f"intensity dtype must be float32 or uint16, got {dtype!r}")
    scan_shape = tuple(int(v) for v in scan_shape)
    detector_shape = tuple(int(v) for v in detector_shape)
    if min(scan_shape + detector_shape) < 1:
        _fail(f"scan {scan_shape} and detector {detector_shape} must have at least one pixel")
    chunks = tuple(chunks) if chunks else default_chunks(scan_shape, detector_shape, itemsize=np.dtype(dtype).itemsize)
    try:
        check_output(path, overwrite=overwrite)
    except ValueError as exc:
        raise ScanStoreError(str(exc)) from None
    with atomic_path(path, overwrite=overwrite) as tmp:
        group = zarr.open_group(tmp, mode="w-", zarr_format=3)
        attrs = metadata.to_attrs()
        attrs["complete"] = False
        attrs["store_uuid"] = uuid.uuid4().hex  # identity of this write (resume records compare it)
        group.attrs.update(attrs)
        group.create_array(
            "intensity",
            shape=(3,) + scan_shape + detector_shape,
            chunks=(1, min(chunks[0], scan_shape[0]), min(chunks[1], scan_shape[1])) + detector_shape,
            dtype=dtype,
            compressors=_compressors(),
            dimension_names=("defocus", "Rx", "Ry", "Qx", "Qy"),
            fill_value=0,
            config={"write_empty_chunks": True},
        )
        yield group
        # write_empty_chunks is a runtime setting: writers going through group["intensity"] or reopening the array
        # (Dask workers) drop all-zero chunks; write those now, so that a chunk missing later means a lost one.
        for name in ("intensity", "truth/projected_phase", "truth/probe_frame_phase"):
            if name in group:
                _fill_missing_chunks(group[name])
        group.attrs["complete"] = True


def write_truth(group, projected_phase: np.ndarray, *, pixel_size: tuple[float, float],
                origin: tuple[float, float] = (0.0, 0.0), probe_frame_chunks: tuple[int, int] | None = None,
                attrs: dict | None = None):
    """Add the ``truth/`` group of a simulated scan.

    Parameters
    ----------
    group : zarr.Group
        The store being written (from :func:`write_scan_store`).
    projected_phase : ndarray, shape (Nx, Ny)
        σ·Σ v_z in rad on the object grid.
    pixel_size : (dx, dy)
        Object-grid pixel size in Å.
    origin : (x0, y0)
        Position of pixel (0, 0) relative to the first scan position, Å.
    probe_frame_chunks : (cx, cy), optional
        When given, an empty ``probe_frame_phase`` array (Rx, Ry, Qx, Qy) float32 with these scan
        chunks is created for the caller to fill.
    attrs : dict, optional
        Extra attributes of the truth group (e.g. thickness).

    Returns
    -------
    zarr.Group
        The truth group.
    """
    truth = group.create_group("truth")
    if attrs:
        truth.attrs.update(attrs)
    arr = truth.create_array("projected_phase", data=np.asarray(projected_phase, dtype=np.float32),
                             dimension_names=("x", "y"), compressors=_compressors(),
                             config={"write_empty_chunks": True})
    arr.attrs.update({"pixel_size_A": [float(v) for v in pixel_size], "origin_A": [float(v) for v in origin],
                      "units": "rad", "definition": "sigma * sum over slices of the projected potential v_z"})
    if probe_frame_chunks is not None:
        shape = tuple(group["intensity"].shape[1:])
        pf = truth.create_array(
            "probe_frame_phase", shape=shape, chunks=tuple(probe_frame_chunks) + shape[2:], dtype="float32",
            compressors=_compressors(), dimension_names=("Rx", "Ry", "Qx", "Qy"), fill_value=0,
            config={"write_empty_chunks": True},
        )
        pf.attrs.update({"units": "rad", "defocus_index": 1,
                         "definition": "arg of E(q, r) exp(+2 pi i q.r) at focus (probe frame), centred like intensity"})
    return truth



# ----------------------------------------------------------------------------------------------------------------
# Reading blocks and checking whole stores
# ----------------------------------------------------------------------------------------------------------------


def _open_intensity(source):
    """The intensity array of ``source``: a zarr.Array, a :class:`ScanStore`, or the path of a store (or of its
    ``intensity`` array)."""
    import zarr

    if isinstance(source, ScanStore):
        return source.intensity
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            _fail(f"scan store {path!r} does not exist")
        node = zarr.open(path, mode="r")
        if _is_group(node):
            if "intensity" not in node:
                _fail(f"{path} has no 'intensity' array")
            node = node["intensity"]
            if _is_group(node):
                _fail(f"{path}: 'intensity' is a Zarr group, not an array")
        return node
    return source


def _as_index(idx, n: int):
    """A slice for a step-1 contiguous range, else an integer array (for orthogonal indexing)."""
    if isinstance(idx, slice):
        return idx
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    if idx.size and np.all(np.diff(idx) == 1) and idx[0] >= 0:
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def _touched(sel, n: int, size: int) -> list[int]:
    """Chunk indices along one axis touched by a slice or an index array."""
    pos = np.arange(n)[sel] if isinstance(sel, slice) else np.asarray(sel) % n
    return sorted({int(p) // size for p in np.atleast_1d(pos)})


def _bad_chunks_in(array, coords_list) -> list["BadChunk"]:
    """Read the given chunks one at a time; every one that is missing or does not decode."""
    present = _stored_keys(array)
    name = _array_name(array)
    bad = []
    for coords in coords_list:
        key = _chunk_key(array, coords)
        where = _chunk_where(array, coords)
        if present is not None and key not in present:
            bad.append(BadChunk(f"{name}/{key}", where, "missing", "missing"))
            continue
        try:
            array[_chunk_region(array, coords)]
        except Exception as exc:  # noqa: BLE001 - any decode failure names the chunk
            bad.append(BadChunk(f"{name}/{key}", where, _decode_problem(exc), "corrupt"))
    return bad


def read_block(source, rows, cols, *, defocus=None, dtype=np.float32) -> np.ndarray:
    """Read ``intensity[defocus, rows, cols]`` of a scan store, naming any bad chunk.

    A plain module-level function (picklable: Dask tasks call it with the store's path). Contiguous ranges are
    read by slicing, non-contiguous or wrapped index lists (e.g. ``[14, 15, 0, 1]``) by orthogonal indexing,
    exactly like ``intensity.oindex[:, rows, cols]``.

    Parameters
    ----------
    source : str, PathLike, zarr.Array or ScanStore
        The scan store folder (or its ``intensity`` array, opened or as a path).
    rows, cols : sequence of int or slice
        Scan positions along Rx and Ry.
    defocus : sequence of int, optional
        Defocus indices to read (default all three).
    dtype : numpy dtype
        Of the returned array (float32 by default).

    Returns
    -------
    ndarray, shape (D, len(rows), len(cols), Qx, Qy)
        D = 3, or ``len(defocus)``.

    Raises
    ------
    ScanStoreError
        One line naming the chunk key(s) that are missing on disk or fail to decode (CRC-32C mismatch, Blosc
        error, truncated file), the scan positions they hold, and what to do.
    """
    import itertools

    array = _open_intensity(source)
    shape = tuple(array.shape)
    sr, sc = _as_index(rows, shape[1]), _as_index(cols, shape[2])
    sd = slice(None) if defocus is None else _as_index(list(defocus), shape[0])
    cs, grid = _object_shape(array), _chunk_grid(array)
    touched = list(itertools.product(_touched(sd, shape[0], cs[0]), _touched(sr, shape[1], cs[1]),
                                     _touched(sc, shape[2], cs[2]), *(range(g) for g in grid[3:])))
    # A missing chunk reads as zeros without an error: look for the touched ones first (a stat each).
    missing = [c for c, ok in zip(touched, _on_disk(array, touched)) if not ok]
    if missing:
        _raise_bad(array, [BadChunk(f"{_array_name(array)}/{_chunk_key(array, c)}", _chunk_where(array, c),
                                    "missing", "missing") for c in missing])
    try:
        if isinstance(sr, slice) and isinstance(sc, slice) and isinstance(sd, slice):
            out = array[sd, sr, sc]
        else:
            ir = np.arange(shape[1])[sr] if isinstance(sr, slice) else sr
            ic = np.arange(shape[2])[sc] if isinstance(sc, slice) else sc
            idd = np.arange(shape[0])[sd] if isinstance(sd, slice) else sd
            out = array.oindex[idd, ir, ic]
    except Exception:  # noqa: BLE001 - find the chunk that failed, one at a time
        bad = _bad_chunks_in(array, touched)
        if not bad:
            raise
        _raise_bad(array, bad)
    return np.asarray(out, dtype=dtype)


def _on_disk(array, coords_list) -> list[bool]:
    """Whether each chunk is stored (one stat per chunk on a local store; True where the store can't tell)."""
    root = getattr(array.store, "root", None)
    if root is None:
        return [True] * len(coords_list)
    base = os.path.join(os.fspath(root), *str(array.path).split("/")) if array.path else os.fspath(root)
    return [os.path.isfile(os.path.join(base, *_chunk_key(array, c).split("/"))) for c in coords_list]


def _raise_bad(array, bad: list["BadChunk"]):
    path = _store_path_of(array)
    first = bad[0]
    more = f"; {len(bad) - 1} more bad: " + ", ".join(b.key for b in bad[1:4]) + (" …" if len(bad) > 4 else "") \
        if len(bad) > 1 else ""
    raise ScanStoreError(f"scan store {path!r} is damaged: chunk {first.key} ({first.where}) is {first.problem}"
                         f"{more}; " + _FIX.format(path=path)) from None


@dataclass(frozen=True)
class BadChunk:
    """One bad chunk found by :func:`read_block` or :func:`check_scan_store`.

    Attributes
    ----------
    key : str
        Store key, e.g. ``"intensity/c/1/2/0/0/0"``.
    where : str
        The positions it holds, e.g. ``"defocus index 1, Rx 8–11, Ry 0–3"``.
    problem : str
        ``"missing"``, ``"corrupt (…)"``, ``"5 non-finite values (NaN/Inf), first at …"``.
    kind : str
        ``"missing"``, ``"corrupt"`` or ``"non-finite"``.
    """

    key: str
    where: str
    problem: str
    kind: str

    def __str__(self) -> str:
        return f"{self.key} ({self.where}): {self.problem}"


@dataclass
class StoreCheck:
    """The result of :func:`check_scan_store`.

    Attributes
    ----------
    path : str
    chunks : int
        Chunks checked (intensity and truth arrays).
    bad : list of BadChunk
    """

    path: str
    chunks: int = 0
    bad: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad

    def summary(self) -> str:
        """One line: ``all M chunks present and intact`` or ``N of M chunks bad: …``."""
        if self.ok:
            return f"all {self.chunks} chunks present and intact"
        kinds = {}
        for b in self.bad:
            kinds[b.kind] = kinds.get(b.kind, 0) + 1
        counts = ", ".join(f"{n} {k}" for k, n in kinds.items())
        return (f"{len(self.bad)} of {self.chunks} chunks bad in {self.path!r} ({counts}), first {self.bad[0]}; "
                "copy the store again from the source or re-import it")


def check_scan_store(source, *, on_bad=None) -> StoreCheck:
    """Verify every chunk of a scan store: present on disk, decodes (CRC-32C, Blosc), right shape, finite.

    Reads one chunk at a time (memory bounded by one chunk). Checks ``intensity`` and the ``truth/`` arrays.
    Missing chunks are listed rather than refused (the store is opened with ``check_chunks=False``).

    Parameters
    ----------
    source : str, PathLike or ScanStore
    on_bad : callable, optional
        Called with each :class:`BadChunk` as it is found (``info --check`` prints them).

    Returns
    -------
    StoreCheck
    """
    import itertools

    st = source if isinstance(source, ScanStore) else open_scan_store(source, check_chunks=False)
    arrays = [st.intensity]
    if st.truth is not None:
        arrays += [st.truth[n] for n in ("projected_phase", "probe_frame_phase") if n in st.truth]
    report = StoreCheck(path=st.path)
    for array in arrays:
        present = _stored_keys(array)
        name = _array_name(array)
        floating = np.issubdtype(array.dtype, np.floating)
        for coords in itertools.product(*(range(g) for g in _chunk_grid(array))):
            report.chunks += 1
            key, region = _chunk_key(array, coords), _chunk_region(array, coords)
            bad = None
            if present is not None and key not in present:
                bad = BadChunk(f"{name}/{key}", _chunk_where(array, coords), "missing", "missing")
            else:
                try:
                    block = np.asarray(array[region])
                except Exception as exc:  # noqa: BLE001
                    bad = BadChunk(f"{name}/{key}", _chunk_where(array, coords), _decode_problem(exc), "corrupt")
                else:
                    want = tuple(sl.stop - sl.start for sl in region)
                    if block.shape != want:
                        bad = BadChunk(f"{name}/{key}", _chunk_where(array, coords),
                                       f"corrupt (shape {block.shape}, expected {want})", "corrupt")
                    elif floating:
                        nonfinite = ~np.isfinite(block)
                        count = int(nonfinite.sum())
                        if count:
                            first = [tuple(int(i + sl.start) for i, sl in zip(ix, region))
                                     for ix in np.argwhere(nonfinite)[:3]]
                            nan = int(np.isnan(block).sum())
                            bad = BadChunk(f"{name}/{key}", _chunk_where(array, coords),
                                           f"{count} non-finite values ({nan} NaN, {count - nan} ±Inf), first at "
                                           + ", ".join(str(f) for f in first) + (" …" if count > 3 else ""),
                                           "non-finite")
            if bad is not None:
                report.bad.append(bad)
                if on_bad is not None:
                    on_bad(bad)
    return report

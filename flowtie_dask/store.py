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
"""

from __future__ import annotations

import contextlib
import math
import os
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
]

SCHEMA = "flowtie-dask/scan"
SCHEMA_VERSION = 1
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
        """Raise :class:`ScanStoreError` for values no microscope produces."""
        if not (math.isfinite(self.energy) and self.energy > 0):
            raise ScanStoreError(f"energy must be a positive number of eV, got {self.energy!r}")
        if not (math.isfinite(self.semiangle) and self.semiangle > 0):
            raise ScanStoreError(f"semiangle must be a positive number of mrad, got {self.semiangle!r}")
        if len(self.defocus) != 3 or len(set(self.defocus)) != 3:
            raise ScanStoreError(f"defocus must be three distinct values in Å (−Δz, 0, +Δz), got {self.defocus!r}")
        if not all(math.isfinite(v) and v > 0 for v in self.scan_step):
            raise ScanStoreError(f"scan_step must be positive Å, got {self.scan_step!r}")
        if not all(math.isfinite(v) and v > 0 for v in self.detector_sampling):
            raise ScanStoreError(f"detector_sampling must be positive 1/Å, got {self.detector_sampling!r}")
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
    from zarr.codecs import BloscCodec, BloscShuffle

    return [BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.bitshuffle)]


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
        lines = [
            f"scan store     {self.path}",
            f"intensity      {tuple(a.shape)} {a.dtype}, chunks {tuple(a.chunks)}, "
            f"{raw / 2**20:.1f} MiB raw, {stored / 2**20:.1f} MiB on disk ({raw / max(stored, 1):.1f}x)",
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


def validate_scan_store(group, *, path: str = "the store") -> ScanStore:
    """Check a Zarr group against the scan-store schema.

    Parameters
    ----------
    group : zarr.Group
    path : str
        Name used in error messages.

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
        if "projected_phase" not in truth:
            _fail(f"{path}: truth group has no 'projected_phase'")
        pp = truth["projected_phase"]
        if pp.ndim != 2 or "pixel_size_A" not in pp.attrs or "origin_A" not in pp.attrs:
            _fail(f"{path}: truth/projected_phase must be 2D with 'pixel_size_A' and 'origin_A' attributes")
        if "probe_frame_phase" in truth and tuple(truth["probe_frame_phase"].shape) != tuple(inten.shape[1:]):
            _fail(f"{path}: truth/probe_frame_phase shape {tuple(truth['probe_frame_phase'].shape)} "
                  f"does not match the scan {tuple(inten.shape[1:])}")
    return ScanStore(path=path, group=group, intensity=inten, metadata=meta, truth=truth)


def open_scan_store(path: str | os.PathLike) -> ScanStore:
    """Open and validate a scan store read-only.

    Parameters
    ----------
    path : str or PathLike
        Folder of the Zarr v3 group.

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
    if not os.path.exists(path):
        _fail(f"scan store {path!r} does not exist")
    try:
        group = zarr.open_group(path, mode="r")
    except Exception:
        _fail(f"{path!r} is not a Zarr group; give the folder written by 'flowtie-dask simulate' or 'import'")
    return validate_scan_store(group, path=path)


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
        With an empty ``intensity`` array of shape (3, Rx, Ry, Qx, Qy), chunks (1, cx, cy, Qx, Qy).
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
        group.attrs.update(attrs)
        group.create_array(
            "intensity",
            shape=(3,) + scan_shape + detector_shape,
            chunks=(1, min(chunks[0], scan_shape[0]), min(chunks[1], scan_shape[1])) + detector_shape,
            dtype=dtype,
            compressors=_compressors(),
            dimension_names=("defocus", "Rx", "Ry", "Qx", "Qy"),
            fill_value=0,
        )
        yield group
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
                             dimension_names=("x", "y"))
    arr.attrs.update({"pixel_size_A": [float(v) for v in pixel_size], "origin_A": [float(v) for v in origin],
                      "units": "rad", "definition": "sigma * sum over slices of the projected potential v_z"})
    if probe_frame_chunks is not None:
        shape = tuple(group["intensity"].shape[1:])
        pf = truth.create_array(
            "probe_frame_phase", shape=shape, chunks=tuple(probe_frame_chunks) + shape[2:], dtype="float32",
            compressors=_compressors(), dimension_names=("Rx", "Ry", "Qx", "Qy"), fill_value=0,
        )
        pf.attrs.update({"units": "rad", "defocus_index": 1,
                         "definition": "arg of E(q, r) exp(+2 pi i q.r) at focus (probe frame), centred like intensity"})
    return truth


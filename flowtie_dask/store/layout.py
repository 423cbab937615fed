"""The scan store's layout: :class:`ScanStore` and the functions that write, open and validate a store.

:func:`write_scan_store` builds a store in a hidden sibling folder and renames it into place only when complete
(every chunk on disk, all-zero ones included); :func:`write_truth` adds the ``truth/`` group of a simulated scan.
:func:`open_scan_store` is the one entry point that reads a store; :func:`validate_scan_store` checks a Zarr group
against the schema (attributes, array shapes, every intensity chunk present) and raises a one-line
:class:`~flowtie_dask.store.ScanStoreError` naming the first problem.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..atomic import atomic_path, check_output
from ..physics.constants import wavelength
from ..physics.optics import DEFOCUS_CONVENTION
from .chunks import (
    _FIX,
    _array_name,
    _chunk_key,
    _chunk_where,
    _fill_missing_chunks,
    _missing_chunks,
    _store_path_of,
)
from .metadata import SCHEMA, SCHEMA_VERSION, ScanMetadata, ScanStoreError, _compressors, default_chunks

__all__ = ["ScanStore", "validate_scan_store", "open_scan_store", "write_scan_store", "write_truth",
           "intensity_scale"]

def intensity_scale(array) -> np.ndarray | None:
    """The per-scan factors of an intensity array that stores counts (its ``scale`` attribute: normalised value =
    stored value × scale[defocus index]), float64 of shape (3,); None for a store holding normalised values.

    Raises
    ------
    ScanStoreError
        The attribute is not three positive finite numbers.
    """
    scale = array.attrs.get("scale")
    if scale is None:
        return None
    try:
        values = np.asarray(scale, dtype=np.float64)
    except (TypeError, ValueError):
        values = np.zeros(0)
    if values.shape != (array.shape[0],) or not np.all(np.isfinite(values) & (values > 0)):
        raise ScanStoreError(f"scan store {_store_path_of(array)!r}: intensity attribute 'scale' must be "
                             f"{array.shape[0]} positive numbers (one per scan), got {scale!r}; import the scan again")
    return values


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
            + ("CRC-32C per chunk" if checksummed else "no checksums (an older store)")
            + ("" if (scale := intensity_scale(a)) is None else
               ", counts read × scale " + " / ".join(f"{v:.4g}" for v in scale) + " per scan"),
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
        """The intensity as a dask array chunked like the store, shape (3, Rx, Ry, Qx, Qy); a store of counts
        (with a ``scale`` attribute) normalised like :func:`~flowtie_dask.store.read_block` reads it (float32)."""
        import dask.array as da

        x = da.from_zarr(self.intensity)
        scale = intensity_scale(self.intensity)
        if scale is None:
            return x
        return x.astype(np.float32) * scale.astype(np.float32)[:, None, None, None, None]


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
        The group with its ``intensity`` array, metadata and ``truth`` group (None when there is none).

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
    intensity_scale(inten)  # a store of counts: its per-scan factors are three positive numbers
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
    codec: str = "default",
    shards: tuple[int, int] | None = None,
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
    codec : {"default", "fast"}
        Blosc codec of the intensity (:data:`~flowtie_dask.store.metadata.CODECS`).
    shards : (sx, sy), optional
        Scan positions per shard (multiples of ``chunks``): zarr's sharding codec stores that many chunks in
        one file with an index, so a 50 GB scan is hundreds of files instead of tens of thousands, and a read
        still decodes only the chunks it touches. Concurrent writers must then write whole shards.

    Yields
    ------
    zarr.Group
        With an empty ``intensity`` array of shape (3, Rx, Ry, Qx, Qy), chunks (1, cx, cy, Qx, Qy), compressed
        with Blosc and a CRC-32C per chunk. Chunks left unwritten (or written all-zero by a writer that
        dropped empty chunks) are written as zeros before the store is marked complete, so every chunk is on
        disk and a missing one is detected when the store is opened.
    """
    import zarr

    if dtype not in ("float32", "uint16"):
        _fail(f"intensity dtype must be float32 or uint16, got {dtype!r}")
    scan_shape = tuple(int(v) for v in scan_shape)
    detector_shape = tuple(int(v) for v in detector_shape)
    if min(scan_shape + detector_shape) < 1:
        _fail(f"scan {scan_shape} and detector {detector_shape} must have at least one pixel")
    chunks = tuple(chunks) if chunks else default_chunks(scan_shape, detector_shape, itemsize=np.dtype(dtype).itemsize)
    chunks = (min(chunks[0], scan_shape[0]), min(chunks[1], scan_shape[1]))
    if shards is not None:  # clipped to the scan, then rounded up to whole chunks
        shards = (min(int(shards[0]), scan_shape[0]), min(int(shards[1]), scan_shape[1]))
        if any(s % c for s, c in zip(shards, chunks)) and shards != scan_shape:
            _fail(f"shards {shards} must be whole multiples of the chunks {chunks} (scan positions)")
        shards = tuple(-(-s // c) * c for s, c in zip(shards, chunks))
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
            chunks=(1,) + chunks + detector_shape,
            shards=None if shards is None else (1,) + shards + detector_shape,
            dtype=dtype,
            compressors=_compressors(codec),
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

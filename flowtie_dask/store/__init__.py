"""The scan store: one Zarr v3 group per defocus series (DESIGN §5).

Layout::

    scan.zarr/
      intensity            (3, Rx, Ry, Qx, Qy) float32 or uint16, chunks (1, cx, cy, Qx, Qy), Blosc (Zstd, or LZ4
                           in the "fast" layout, optionally sharded: :func:`rechunk_store`); a store
                           of counts (camera frames imported as they are) has the attribute ``scale``: normalised
                           = stored × scale[defocus index] (:func:`intensity_scale`; :func:`read_block` applies it)
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

The package's modules: :mod:`.metadata` (schema constants, :class:`ScanStoreError`, :class:`ScanMetadata`,
:func:`default_chunks`), :mod:`.chunks` (chunk keys, positions and presence on disk), :mod:`.layout`
(:class:`ScanStore`, writing, opening and validating a store), :mod:`.counts` (:func:`electrons_per_pattern`, the
dose the data carry), :mod:`.integrity` (:func:`read_block`,
:func:`check_scan_store`), :mod:`.handle` (:class:`StoreHandle`, what Dask tasks carry), :mod:`.rechunk` (:func:`rechunk_store`, another
codec, chunking or sharding) and :mod:`.update`
(:func:`update_scan_metadata`, an atomic change of a store's metadata in place, e.g. by ``flowtie-dask calibrate``). Every public name is
importable from ``flowtie_dask.store``; the private helpers (``_chunk_key`` …) from the module that defines them.
"""

from __future__ import annotations

from typing import Any  # noqa: F401 - resolves ScanStore's annotations (its __module__ is this package)

from .handle import StoreHandle
from .integrity import BadChunk, StoreCheck, check_scan_store, read_block
from .counts import electrons_per_pattern
from .layout import ScanStore, intensity_scale, open_scan_store, validate_scan_store, write_scan_store, write_truth
from .metadata import (
    INTENSITY_NORMALIZATION,
    SCHEMA,
    SCHEMA_VERSION,
    UNITS,
    ScanMetadata,
    CODECS,
    ScanStoreError,
    default_chunks,
)
from .rechunk import LAYOUTS, rechunk_store
from .update import update_scan_metadata

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "UNITS",
    "INTENSITY_NORMALIZATION",
    "ScanStoreError",
    "ScanMetadata",
    "ScanStore",
    "default_chunks",
    "write_scan_store",
    "write_truth",
    "open_scan_store",
    "validate_scan_store",
    "read_block",
    "intensity_scale",
    "electrons_per_pattern",
    "BadChunk",
    "StoreCheck",
    "check_scan_store",
    "StoreHandle",
    "update_scan_metadata",
    "CODECS",
    "LAYOUTS",
    "rechunk_store",
]

# The public classes and functions keep the module name they had before the split (flowtie_dask.store), so
# tracebacks, reprs and pickles (Dask tasks carry read_block) read as before.
for _obj in (ScanStoreError, ScanMetadata, ScanStore, BadChunk, StoreCheck, default_chunks, write_scan_store,
             write_truth, open_scan_store, validate_scan_store, read_block, check_scan_store, intensity_scale,
             electrons_per_pattern):
    _obj.__module__ = __name__
del _obj

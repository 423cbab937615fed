"""Changing a scan store's metadata in place: :func:`update_scan_metadata`.

The group's attributes live in its ``zarr.json``. They are rewritten whole, beside the old file, and renamed over
it (:func:`flowtie_dask.atomic.write_file_atomic`: a reader sees the old attributes or the new, never half), under
a lock (``flock`` on a hidden file in the store, removed afterwards) that serialises updaters: two calibrations at
once would otherwise lose one's change. The new values pass through :class:`~flowtie_dask.store.ScanMetadata`, so
nothing a store could not hold is written; every attribute that is not metadata (``complete``, ``store_uuid``, …)
is kept. The intensity is not touched. A store's identity for ``--resume``
(:func:`flowtie_dask.resume.store_identity`) covers the bytes of ``zarr.json``, so work kept from before the
update is not reused after it.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Callable, Iterator

from ..atomic import write_file_atomic
from .layout import open_scan_store
from .metadata import ScanMetadata, ScanStoreError

try:  # POSIX; elsewhere updates are not serialised (each is still atomic)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = ["update_scan_metadata"]


@contextlib.contextmanager
def _update_lock(path: str) -> Iterator[None]:
    """An exclusive lock on the hidden file ``.metadata-lock`` inside the store (which must be writable for the
    update anyway); removed afterwards — a waiter that finds it removed or replaced locks the file there now."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock = os.path.join(path, ".metadata-lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)  # the holder before us removed it: lock the file that is there now
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock)  # still holding the lock: a waiter on this file sees it gone and retries
        os.close(fd)


def update_scan_metadata(path: str | os.PathLike, change: Callable[[ScanMetadata], dict] | None = None,
                         **fields) -> ScanMetadata:
    """Replace some :class:`ScanMetadata` fields of a scan store, atomically.

    Parameters
    ----------
    path : str or PathLike
        The scan store folder.
    change : callable, optional
        ``change(current) -> {field: value}``, called with the store's metadata as it is under the lock: the way
        to make a change that depends on the current values (e.g. adding to the ``calibration`` record) without
        losing a concurrent update. Its fields are applied after ``fields``.
    **fields
        Fields of :class:`ScanMetadata` and their new values (e.g. ``detector_center=(31.7, 32.1)``); checked as
        :meth:`ScanMetadata.replace` checks them.

    Returns
    -------
    ScanMetadata
        The store's metadata as now written.

    Raises
    ------
    ScanStoreError
        Not a (complete) scan store, an unknown field, or a value a store cannot hold; nothing is written.
    """
    path = os.fspath(path)
    _known(fields)
    open_scan_store(path, check_chunks=False)  # a complete scan store (one-line error otherwise)
    doc_path = os.path.join(path, "zarr.json")
    with _update_lock(path):
        try:
            with open(doc_path, "rb") as f:
                doc = json.loads(f.read())
        except (OSError, ValueError) as exc:
            raise ScanStoreError(f"cannot read {doc_path!r} ({type(exc).__name__}: {exc})") from None
        attrs = doc.get("attributes", {})
        current = ScanMetadata.from_attrs(attrs)
        more = dict(change(current)) if change is not None else {}
        _known(more)
        try:
            meta = current.replace(**{**fields, **more})
        except TypeError as exc:
            raise ScanStoreError(f"scan metadata update refused: {exc}") from None
        try:
            text = json.dumps({**doc, "attributes": {**attrs, **meta.to_attrs()}}, indent=2, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ScanStoreError(f"scan metadata update refused: a value is not JSON ({exc})") from None
        write_file_atomic(doc_path, text.encode())
    return meta


def _known(fields: dict) -> None:
    unknown = sorted(set(fields) - set(ScanMetadata.__dataclass_fields__))
    if unknown:
        raise ScanStoreError(f"unknown scan metadata field(s) {', '.join(unknown)}; the fields are "
                             f"{', '.join(ScanMetadata.__dataclass_fields__)}")

"""Resumable runs: a work folder beside the output that keeps what an interrupted run finished.

``resume_workspace(out, record=...)`` claims ``out`` (:func:`flowtie_dask.atomic.claim_output`) and yields
the folder ``.NAME.resume/`` beside it, holding ``record.json`` — the run's inputs: store identity, method,
parameters, code version — and whatever finished pieces the command writes there atomically (tile
partials of a reconstruction, member stores of a collection). When the block succeeds the folder is
removed (or published as the output, see ``publish``). When it fails or is interrupted (Ctrl-C, SIGTERM,
SIGKILL) the folder stays; the next run on the same output

* without ``--resume`` or ``--overwrite`` is refused with a message saying how much finished work is there;
* with ``--resume`` reuses it if its record equals this run's, and is refused naming what differs otherwise;
* with ``--overwrite`` discards it and starts again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from typing import Any, Iterable, Iterator

from . import __version__
from .atomic import OutputBusyError, claim_output, publish, write_file_atomic

__all__ = ["ResumeMismatchError", "count_pieces", "file_digest", "jsonable", "reconstruction_record", "resume_workspace",
           "store_identity"]


class ResumeMismatchError(ValueError):
    """The kept work was made from other inputs than this run's."""


def file_digest(path: str | os.PathLike | None) -> str | None:
    """SHA-256 of a file (None for None)."""
    if path is None:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def store_identity(path: str | os.PathLike) -> str:
    """An identity of a Zarr store that changes when it is rewritten or re-imported.

    Stores written by this flowtie-dask carry a ``store_uuid`` attribute (new at every write): the identity
    is its path, that attribute and the bytes of the group's and ``intensity``'s ``zarr.json`` (two small
    reads, whatever the store's size). Older stores: every file's name, size and mtime (one stat per file).
    """
    path = os.path.realpath(os.fspath(path))
    h = hashlib.sha256(path.encode())
    docs = [os.path.join(path, "zarr.json"), os.path.join(path, "intensity", "zarr.json")]
    try:
        with open(docs[0], "rb") as f:
            group = f.read()
        fast = b'"store_uuid"' in group
    except OSError:
        fast = False
    if fast:
        for doc in docs:
            with open(doc, "rb") as f:
                h.update(f.read())
        return h.hexdigest()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            st = os.stat(full)
            h.update(f"{os.path.relpath(full, path)}:{st.st_size}:{st.st_mtime_ns}".encode())
            if name == "zarr.json":
                with open(full, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


def reconstruction_record(store: str, *, method: str, model: str | None, parameters: dict) -> dict:
    """What a reconstruction's tile partials depend on (compared on ``--resume``).

    Parameters
    ----------
    store : str
        Scan store path.
    method : str
    model : str or None
        Checkpoint file (its bytes are hashed).
    parameters : dict
        JSON-able parameters that change the partials (tiling, halo, periodicity, symmetry, …).
    """
    return {"kind": "reconstruction", "store": os.path.realpath(store), "store_identity": store_identity(store),
            "method": method, "model": None if model is None else os.path.realpath(model),
            "model_sha256": file_digest(model), "parameters": parameters, "flowtie_dask_version": __version__}


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        if old.get(k) == new.get(k):
            continue
        if isinstance(old.get(k), dict) and isinstance(new.get(k), dict):
            out += [f"{k}.{d}" for d in _differences(old[k], new[k])]
        else:
            out.append(k)
    return out


def _pieces(folder: str) -> int:
    return sum(1 for n in os.listdir(folder) if n != "record.json" and not n.startswith("."))


@contextlib.contextmanager
def resume_workspace(out: str | os.PathLike, *, record: dict, resume: bool = False, overwrite: bool = False,
                     inputs: Iterable = (), publish_folder: bool = False) -> Iterator[str]:
    """Claim ``out`` and yield its resume folder (see the module docstring).

    Parameters
    ----------
    out : str or PathLike
        The command's output.
    record : dict
        JSON-able description of the inputs the kept pieces depend on.
    resume : bool
        Reuse kept pieces whose record matches.
    overwrite : bool
        Discard kept pieces (and replace an existing output at the end).
    inputs : iterable of paths
        Never written over (:func:`flowtie_dask.atomic.protect_inputs`).
    publish_folder : bool
        On success the folder itself (without ``record.json``) is renamed to ``out``, for outputs that are
        built in place (a collection); otherwise it is deleted after the caller wrote ``out``.

    Yields
    ------
    str
        The resume folder (exists, holds ``record.json`` and the pieces kept from an earlier run).
    """
    out = os.path.abspath(os.fspath(out))
    parent, base = os.path.split(out)
    name = f".{base}.resume"
    folder = os.path.join(parent, name)
    with claim_output(out, overwrite=overwrite, inputs=inputs, resume=resume, keep=[name]):
        if os.path.isdir(folder):
            try:
                with open(os.path.join(folder, "record.json")) as f:
                    old = json.load(f)
            except (OSError, ValueError):
                old = None
            n = _pieces(folder)
            if n == 0:
                shutil.rmtree(folder)  # nothing was finished: nothing to resume or to warn about
            elif resume and old is not None:
                diff = _differences({k: v for k, v in old.items() if k != "reused"}, record)
                if diff:
                    raise ResumeMismatchError(
                        f"the work kept in {folder!r} was made from other inputs (differs in: {', '.join(diff)}); "
                        "rerun with the same inputs, or pass --overwrite instead of --resume to discard it")
            elif resume:
                shutil.rmtree(folder)  # no readable record: nothing can be trusted
            elif overwrite:
                shutil.rmtree(folder)
            else:
                raise OutputBusyError(
                    f"an interrupted run on {out!r} left {n} finished pieces in {folder!r}: pass --resume to continue "
                    "it, or --overwrite to discard them and start again")
        os.makedirs(folder, exist_ok=True)
        record = dict(record)
        write_file_atomic(os.path.join(folder, "record.json"), json.dumps(record, indent=1).encode())
        try:
            yield folder
        except BaseException:
            if _pieces(folder) == 0:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        if publish_folder:
            publish(folder, out, overwrite=overwrite)
            with contextlib.suppress(FileNotFoundError):  # after publishing: until then the members keep their record
                os.remove(os.path.join(out, "record.json"))
        else:
            shutil.rmtree(folder, ignore_errors=True)


def count_pieces(folder: str) -> int:
    """Finished pieces kept in a resume folder."""
    return _pieces(folder) if os.path.isdir(folder) else 0


def jsonable(x: Any) -> Any:
    """``x`` with tuples as lists and numpy scalars as Python numbers (for records)."""
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))

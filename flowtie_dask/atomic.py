"""Outputs that appear only when complete, claimed by one writer at a time, never written over an input.

Every output of the package (a store, a result, a checkpoint, a figure, a collection) goes through
:func:`atomic_path`:

1. **Claim.** The output path is claimed atomically before any work: ``os.mkdir`` of a lock folder
   ``.NAME.lock`` beside it, holding ``owner.json`` (pid, host, process start time, command; touched every
   30 s while held). A second writer to the same path is refused at once with a message naming the first. A
   lock whose process is gone (SIGKILL; for another host's lock, no heartbeat for 5 minutes: a node
   failure, a requeued batch job) is *stale*: the next run on that path reports it with the partial outputs
   the dead run left, and removes them only with ``overwrite`` (or ``resume``, where a command resumes).
2. **Build.** The output is written under a hidden sibling ``.NAME.partial-XXXXXXXX`` (same folder, so the
   final rename stays on one file system).
3. **Publish.** The partial is renamed into place. A new path is published with ``RENAME_NOREPLACE``
   (nothing that appeared meanwhile is replaced); with ``overwrite`` an old output is swapped with the new
   one in one ``RENAME_EXCHANGE`` (Linux ``renameat2``), so there is never a moment with neither, and only
   then deleted. Where ``renameat2`` is missing, a file is replaced by ``os.replace`` (atomic) and a folder
   by two renames.

:func:`claim_output` takes the claim for a whole command (e.g. ``reconstruct`` claims its ``--out`` before
computing and writes it at the end); :func:`atomic_path` inside the claim reuses it. The machinery behind the
claim (owner records, liveness, heartbeat, stale leftovers) is in :mod:`flowtie_dask.claim`; its names stay
importable from here.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import sys
import time
import uuid
from typing import Iterable, Iterator

# The claim machinery (owner records, liveness, heartbeat, leftovers) lives in .claim; its names stay
# importable from here. claim_output looks _alive, HEARTBEAT_SECONDS and FOREIGN_STALE_SECONDS up in this
# module, so replacing them here (tests do) takes effect.
from .claim import (  # noqa: F401
    _HELD,
    FOREIGN_STALE_SECONDS,
    HEARTBEAT_SECONDS,
    _alive,
    _heartbeat_age,
    _Heartbeat,
    _human,
    _lock_dir,
    _owner_record,
    _process_start,
    _read_owner,
    _remove,
    _size,
    stale_leftovers,
)

__all__ = [
    "OutputExistsError",
    "OutputBusyError",
    "InputOverwriteError",
    "atomic_path",
    "check_output",
    "claim_output",
    "protect_inputs",
    "publish",
    "stale_leftovers",
    "write_file_atomic",
]


class OutputExistsError(ValueError):
    """The output exists and overwriting was not asked for."""


class OutputBusyError(ValueError):
    """Another run is writing the output, or a dead run left its partial output behind."""


class InputOverwriteError(ValueError):
    """The output is, lies inside, or contains one of the command's inputs."""


def _real(path) -> str:
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def protect_inputs(path: str | os.PathLike, inputs: Iterable, *, option: str = "--out") -> None:
    """Refuse an output that equals, lies inside, or contains any input.

    Parameters
    ----------
    path : str or PathLike
        The output.
    inputs : iterable of str or PathLike or None
        The command's inputs (None entries are skipped). Symbolic links are resolved.
    option : str
        The command-line option that named the output, for the message.

    Raises
    ------
    InputOverwriteError
        One line naming the output, the input and what to do.
    """
    out = _real(path)
    for src in inputs:
        if src is None:
            continue
        inp = _real(src)
        if out == inp:
            raise InputOverwriteError(f"{option} {os.fspath(path)!r} is the input {os.fspath(src)!r}; "
                                      "write the output to another path (the input is never replaced)")
        if os.path.commonpath([out, inp]) == inp:
            raise InputOverwriteError(f"{option} {os.fspath(path)!r} lies inside the input {os.fspath(src)!r}; "
                                      "write the output outside it")
        if os.path.commonpath([out, inp]) == out:
            raise InputOverwriteError(f"{option} {os.fspath(path)!r} contains the input {os.fspath(src)!r}; "
                                      "replacing it would delete the input: write the output elsewhere")


def check_output(path: str | os.PathLike, *, overwrite: bool = False, inputs: Iterable = (),
                 option: str = "--out") -> str:
    """Refuse an output path that exists (unless ``overwrite``), whose folder is missing, or that would
    touch an input.

    Parameters
    ----------
    path : str or PathLike
    overwrite : bool
    inputs : iterable of paths
        See :func:`protect_inputs`.
    option : str
        The command-line option that named the output, for messages.

    Returns
    -------
    str
        The absolute path.

    Raises
    ------
    OutputExistsError, InputOverwriteError, ValueError
        One line naming the path and what to do.
    """
    path = os.path.abspath(os.fspath(path))
    protect_inputs(path, inputs, option=option)
    if os.path.lexists(path) and not overwrite:
        raise OutputExistsError(f"{path!r} already exists; choose another {option} or pass --overwrite")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise ValueError(f"the folder {parent!r} for the output does not exist; create it or choose another {option}")
    return path


# ---------------------------------------------------------------------------------------------- the claim


@contextlib.contextmanager
def claim_output(path: str | os.PathLike, *, overwrite: bool = False, inputs: Iterable = (),
                 resume: bool = False, keep: Iterable[str] = ()) -> Iterator[str]:
    """Claim ``path`` for this process for the duration of the block (see the module docstring).

    Parameters
    ----------
    path : str or PathLike
        The output file or folder.
    overwrite : bool
        An existing output may be replaced (at the end, by a rename); stale leftovers of dead runs are removed.
    inputs : iterable of paths
        Refused as outputs (:func:`protect_inputs`).
    resume : bool
        Stale leftovers are accepted (a resuming command reuses what it recognises in them); stale partial
        outputs and locks are removed.
    keep : iterable of str
        Leftover names (e.g. a resume cache ``.NAME.resume``) that are not removed on stale clean-up.

    Yields
    ------
    str
        The absolute output path.

    Raises
    ------
    OutputBusyError
        Another live run holds the claim, or a dead run left leftovers and neither ``overwrite`` nor
        ``resume`` was given.
    """
    path = check_output(path, overwrite=overwrite, inputs=inputs)
    lock = _lock_dir(path)
    if lock in _HELD:  # re-entrant inside one command
        yield path
        return
    token = uuid.uuid4().hex
    for _attempt in range(50):
        try:
            os.mkdir(lock)
            break
        except FileExistsError:
            try:
                judged = os.stat(lock)
            except FileNotFoundError:
                continue
            owner = _read_owner(lock)
            alive = _alive(owner, lock, FOREIGN_STALE_SECONDS)
            if not owner:
                time.sleep(0.2)  # the other writer may be writing owner.json right now
                owner = _read_owner(lock)
                alive = (_alive(owner, lock, FOREIGN_STALE_SECONDS) if owner
                         else (False if time.time() - judged.st_mtime > 5 else True))
            who = (f"pid {owner.get('pid')} on {owner.get('host')}, started "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(owner.get('claimed', 0)))}"
                   if owner else "an unknown process")
            if alive or alive is None:
                raise OutputBusyError(
                    f"{path!r} is being written by another run ({who}); wait for it to finish or choose another "
                    f"--out (if that run is gone, remove {lock!r})") from None
            leftovers = [p for p in stale_leftovers(path) if os.path.basename(p) not in set(keep)]
            if not (overwrite or resume):
                kept = [os.path.join(os.path.dirname(path), k) for k in keep
                        if os.path.exists(os.path.join(os.path.dirname(path), k))]
                raise OutputBusyError(
                    f"a run that died ({who}) left {_human(_size(leftovers + kept))} of partial output beside "
                    f"{path!r}: pass --overwrite to remove it and start again"
                    + (" (or --resume to continue it)" if kept else "")) from None
            # Break the dead run's lock under a second lock (os.mkdir again: one breaker at a time), and only if
            # it is still the lock judged dead: another run may have broken it and claimed the path meanwhile.
            # The dead run's partial outputs are removed below, only by the run that then holds the claim.
            breaker = f"{lock}.break"
            try:
                os.mkdir(breaker)
            except FileExistsError:
                with contextlib.suppress(OSError):
                    if time.time() - os.path.getmtime(breaker) > 10:  # a breaker that died holding it
                        os.rmdir(breaker)
                time.sleep(0.05)
                continue
            try:
                now = os.stat(lock) if os.path.isdir(lock) else None
                if (now is not None and (now.st_ino, now.st_mtime_ns) == (judged.st_ino, judged.st_mtime_ns)
                        and _read_owner(lock) == owner):
                    aside = f"{lock}.stale-{uuid.uuid4().hex[:8]}"
                    with contextlib.suppress(FileNotFoundError):
                        os.rename(lock, aside)
                        _remove(aside)
            finally:
                os.rmdir(breaker)
    else:  # pragma: no cover - fifty races lost in a row
        raise OutputBusyError(f"could not claim {path!r}: another run keeps claiming it")
    try:
        with open(os.path.join(lock, "owner.json"), "w") as f:
            json.dump(_owner_record(token), f)
        orphans = [p for p in stale_leftovers(path) if p != lock and os.path.basename(p) not in set(keep)]
        if orphans:  # partials of a dead run of an older version (no lock), or of a run killed before locking
            if not (overwrite or resume):
                raise OutputBusyError(
                    f"an earlier run left {_human(_size(orphans))} of partial output beside {path!r} "
                    f"({os.path.basename(orphans[0])}): pass --overwrite to remove it and start again")
            for p in orphans:
                _remove(p)
        _HELD[lock] = token
        beat = _Heartbeat(os.path.join(lock, "owner.json"), HEARTBEAT_SECONDS)
        try:
            yield path
        finally:
            beat.stop()
    finally:
        _HELD.pop(lock, None)
        if _read_owner(lock).get("token") == token or not os.path.exists(os.path.join(lock, "owner.json")):
            _remove(lock)


# --------------------------------------------------------------------------------------------- publishing

_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100


def _renameat2(src: str, dst: str, flags: int) -> bool:
    """Linux renameat2; False when the call is unavailable (raises OSError for real failures)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP if hasattr(errno, "ENOTSUP") else errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err), dst)


def publish(tmp: str, path: str, *, overwrite: bool) -> None:
    """Rename ``tmp`` to ``path``; replace an existing ``path`` only with ``overwrite`` and without a gap.

    Parameters
    ----------
    tmp : str
        Finished file or folder in the same folder as ``path``.
    path : str
        Destination.
    overwrite : bool
        An existing ``path`` is swapped out atomically and deleted; without it, an existing path is an error.
    """
    if not os.path.lexists(path):
        try:
            if _renameat2(tmp, path, _RENAME_NOREPLACE):
                return
        except FileExistsError:
            if not overwrite:
                raise OutputExistsError(f"{path!r} appeared while this run was writing it; the new output was "
                                        "discarded: choose another --out or pass --overwrite") from None
        else:
            if not os.path.lexists(path):
                os.rename(tmp, path)
                return
    if not overwrite:
        raise OutputExistsError(f"{path!r} appeared while this run was writing it; the new output was discarded: "
                                "choose another --out or pass --overwrite")
    parent, base = os.path.split(path)
    if os.path.isdir(tmp) or os.path.isdir(path):
        if _renameat2(tmp, path, _RENAME_EXCHANGE):
            _remove(tmp)  # now holds the old output
            return
        old = os.path.join(parent, f".{base}.old-{uuid.uuid4().hex[:8]}")
        os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:  # a failure or a signal between the two renames: put the old output back
            if not os.path.lexists(path):
                os.rename(old, path)
            raise
        _remove(old)
        return
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False, inputs: Iterable = ()) -> Iterator[str]:
    """Yield a temporary sibling path to write; rename it to ``path`` when the block succeeds.

    The path is claimed for the block (:func:`claim_output`; reused when this process already claimed it).
    On an exception, including KeyboardInterrupt and SIGTERM, the temporary output is deleted and an
    existing ``path`` is left untouched.

    Parameters
    ----------
    path : str or PathLike
        Final file or folder.
    overwrite : bool
        Replace an existing ``path`` (only once the new output is complete, by an atomic swap).
    inputs : iterable of paths
        Paths the output must not equal, lie inside or contain.

    Yields
    ------
    str
        Temporary path (same folder, hidden name, same extension).
    """
    with claim_output(path, overwrite=overwrite, inputs=inputs) as path:
        parent, base = os.path.dirname(path), os.path.basename(path)
        tmp = os.path.join(parent, f".{base}.partial-{uuid.uuid4().hex[:8]}{os.path.splitext(base)[1]}")
        try:
            yield tmp
            publish(tmp, path, overwrite=overwrite)
        finally:
            _remove(tmp)


def write_file_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` by a temporary sibling and ``os.replace`` (readers see old or new, never half)."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)

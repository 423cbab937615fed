"""The claim machinery behind :func:`flowtie_dask.atomic.claim_output`: lock folders and owner records.

A claim on an output ``NAME`` is a lock folder ``.NAME.lock`` holding ``owner.json`` (pid, host, process start
time, command), touched by a heartbeat thread while the claim is held. This module holds the owner records,
the liveness test that tells a live claim from a dead one (process table on this host, heartbeat age for
another host), the heartbeat, and the hidden leftovers of earlier runs (:func:`stale_leftovers`).
:mod:`flowtie_dask.atomic` is the public module and takes the claim itself; nothing here imports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import time

__all__ = ["HEARTBEAT_SECONDS", "FOREIGN_STALE_SECONDS", "stale_leftovers"]

_HELD: dict[str, str] = {}  # lock folder → token, for claims held by this process


def _lock_dir(path: str) -> str:
    parent, base = os.path.split(path)
    return os.path.join(parent, f".{base}.lock")


def _process_start(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:
        return None


def _owner_record(token: str) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": _process_start(os.getpid()),
            "claimed": time.time(), "token": token, "command": " ".join(sys.argv[:6])}


def _read_owner(lock: str) -> dict:
    try:
        with open(os.path.join(lock, "owner.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


#: The owner of a claim touches its owner.json this often (seconds) ...
HEARTBEAT_SECONDS = 30.0
#: ... so that a claim from another host whose heartbeat is older than this is known to be dead.
FOREIGN_STALE_SECONDS = 300.0


def _heartbeat_age(lock: str) -> float | None:
    try:
        return time.time() - os.path.getmtime(os.path.join(lock, "owner.json"))
    except OSError:
        return None


def _alive(owner: dict, lock: str | None = None, stale_after: float | None = None) -> bool | None:
    """True/False when the owner's process is known to run/not run; None when it cannot be told.

    On this host the process table says; for another host (a shared file system, a requeued batch job) the
    owner's heartbeat: a claim not refreshed for ``stale_after`` seconds (default
    :data:`FOREIGN_STALE_SECONDS`) is dead.
    """
    if not owner:
        # a lock without a readable owner is either being created this instant or left by a crash
        return None
    if owner.get("host") != socket.gethostname():
        age = _heartbeat_age(lock) if lock is not None else None
        limit = FOREIGN_STALE_SECONDS if stale_after is None else stale_after
        if age is not None and age > limit:
            return False
        return None
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return None
    started = _process_start(pid)
    if started is None:
        return False
    want = owner.get("started")
    return want is None or abs(started - float(want)) < 1.0


def stale_leftovers(path: str | os.PathLike) -> list[str]:
    """Hidden leftovers of earlier runs on ``path``: ``.NAME.partial-*``, ``.NAME.old-*`` and ``.NAME.lock``.

    Returns
    -------
    list of str
        Absolute paths (not the lock of a claim this process holds).
    """
    path = os.path.abspath(os.fspath(path))
    parent, base = os.path.split(path)
    if not os.path.isdir(parent):
        return []
    names = [n for n in os.listdir(parent)
             if n.startswith((f".{base}.partial-", f".{base}.old-", f".{base}.lock.stale-")) or n == f".{base}.lock"]
    own = {lock for lock in _HELD}
    return sorted(p for p in (os.path.join(parent, n) for n in names) if p not in own)


def _size(paths) -> int:
    total = 0
    for p in paths:
        if os.path.isdir(p) and not os.path.islink(p):
            total += sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(p) for f in fs
                         if os.path.isfile(os.path.join(d, f)))
        elif os.path.isfile(p):
            total += os.path.getsize(p)
    return total


def _remove(p: str) -> None:
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p, ignore_errors=True)
    elif os.path.lexists(p):
        with contextlib.suppress(FileNotFoundError):
            os.remove(p)


def _human(nbytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes} B"  # pragma: no cover


class _Heartbeat:
    """Touch the owner record every ``interval`` seconds (default :data:`HEARTBEAT_SECONDS`) from a daemon
    thread while a claim is held."""

    def __init__(self, file: str, interval: float | None = None):
        import threading

        self._stop = threading.Event()
        self._file = file
        self._interval = HEARTBEAT_SECONDS if interval is None else interval
        self._thread = threading.Thread(target=self._run, daemon=True, name="flowtie-dask claim heartbeat")
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self._interval):
            with contextlib.suppress(OSError):
                os.utime(self._file)

    def stop(self):
        self._stop.set()

"""What the run's workers have: their threads and memory (the runner's automatic choices follow them)."""

from __future__ import annotations

import os

__all__: list[str] = []


def _workers(client) -> list[dict]:
    """The distributed workers' records (``nthreads``, ``memory_limit``); empty for in-process runs."""
    if client is None or isinstance(client, str):
        return []
    return list(client.scheduler_info().get("workers", {}).values())


def _machine_memory(kind: str) -> float:
    """This machine's ``"available"`` or ``"total"`` memory in bytes (inf when unknown)."""
    try:
        import psutil

        return float(getattr(psutil.virtual_memory(), kind))
    except Exception:  # noqa: BLE001 - no measurement: no limit
        return float("inf")


def _memory_of(client) -> float:
    """Bytes the run's workers may use: the sum of the distributed workers' memory limits, or this machine's
    available memory for in-process runs (inf when unknown)."""
    limits = [w.get("memory_limit") or 0 for w in _workers(client)]
    if limits and all(limits):
        return float(sum(limits))
    return _machine_memory("available")


def _threads_of(client) -> tuple[int, float]:
    """(threads of the run's workers, the least memory one thread has in bytes): the distributed workers'
    ``nthreads`` and ``memory_limit``, or this machine's cores and total memory for in-process runs (total, not
    available: the same choice from run to run; a resumed run takes its tiles from the cache's record anyway)."""
    workers = _workers(client)
    if workers:
        threads = sum(int(w.get("nthreads") or 1) for w in workers)
        limits = [(w.get("memory_limit") or 0) / max(1, int(w.get("nthreads") or 1)) for w in workers]
        return threads, float(min(limits)) if all(limits) else float("inf")
    cores = os.cpu_count() or 1
    return cores, _machine_memory("total") / cores

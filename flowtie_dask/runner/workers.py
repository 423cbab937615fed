"""What the run's workers have: their threads and memory (the runner's automatic choices follow them)."""

from __future__ import annotations

import os

__all__: list[str] = []


def _memory_of(client) -> float:
    """Bytes the run's workers may use: the sum of the distributed workers' memory limits, or this machine's
    available memory for in-process runs (inf when unknown)."""
    if client is not None and not isinstance(client, str):
        limits = [w.get("memory_limit") or 0 for w in client.scheduler_info().get("workers", {}).values()]
        if limits and all(limits):
            return float(sum(limits))
    try:
        import psutil

        return float(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - no measurement: no limit
        return float("inf")


def _threads_of(client) -> tuple[int, float]:
    """(threads of the run's workers, the least memory one thread has in bytes): the distributed workers'
    ``nthreads`` and ``memory_limit``, or this machine's cores and total memory for in-process runs (total, not
    available: the same choice from run to run; a resumed run takes its tiles from the cache's record anyway)."""
    if client is not None and not isinstance(client, str):
        workers = list(client.scheduler_info().get("workers", {}).values())
        if workers:
            threads = sum(int(w.get("nthreads") or 1) for w in workers)
            limits = [(w.get("memory_limit") or 0) / max(1, int(w.get("nthreads") or 1)) for w in workers]
            return threads, float(min(limits)) if all(limits) else float("inf")
    cores = os.cpu_count() or 1
    try:
        import psutil

        return cores, float(psutil.virtual_memory().total) / cores
    except Exception:  # noqa: BLE001 - no measurement: no limit
        return cores, float("inf")

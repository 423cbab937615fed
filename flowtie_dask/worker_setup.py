"""Dask worker preload of the local clusters flowtie-dask starts (``preload=["flowtie_dask.worker_setup"]``).

An interrupted run cancels the tasks its workers are running; each worker would log a warning per cancelled
task after the user's one-line message. Only that logger is quietened (to errors), and a worker whose peer hung
up mid-transfer no longer prints a traceback (see :class:`_PeerHungUp`); everything else a worker logs, memory
warnings included, is unchanged.

It also sets the worker process's allocator thresholds (:func:`tune_malloc`): Dask's nannies start workers
with ``MALLOC_TRIM_THRESHOLD_=65536``, which turns off glibc's adaptive mmap threshold, so every array over
128 KiB (the per-batch FFT temporaries of every tile) is a fresh mmap whose pages fault in again at each
allocation. Measured on TIE, 128² scan, one worker: 16.0 s → 11.0 s.
"""

import ctypes
import ctypes.util
import logging
import sys

#: Allocations up to this size come from the heap (reused without page faults), larger ones are mmapped.
MMAP_THRESHOLD = 32 * 2**20
#: Free memory kept at the top of the heap before it is returned to the system.
TRIM_THRESHOLD = 256 * 2**20
#: Free memory kept at the top of a heap when it shrinks (and added when it grows). A worker's tasks run in a
#: thread whose arena is a set of 64 MiB heaps; without a pad each free at its top gave the pages back and the
#: next allocation faulted them in again: FlowTIE's model passes, whose activations are reused in place, took
#: 21–23 s per 96² tile in a worker against 14–16 s with it.
TOP_PAD = 64 * 2**20
#: Whether :func:`tune_malloc` set the thresholds in this process.
TUNED = False


class _PeerHungUp(logging.Filter):
    """Drops the tracebacks of a transfer between workers cut off by the other end: "failed during get data"
    (the sender's, when the worker that asked closed the connection) and "Worker stream died during
    communication" (the asker's, when the sender went away) — what every worker prints while a cluster shuts
    down after Ctrl-C. Both ends recover by themselves (the data is fetched from another holder or recomputed
    by the scheduler); a worker that really died is reported by the run in one line."""

    SKIP = ("failed during get data", "Worker stream died during communication")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.SKIP)


def tune_malloc(*, mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD,
                top_pad: int = TOP_PAD) -> bool:
    """Set glibc's ``M_MMAP_THRESHOLD``, ``M_TRIM_THRESHOLD`` and ``M_TOP_PAD`` (bytes) in this process; False
    where the C library is not glibc (nothing is changed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    global TUNED
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # malloc.h
    TUNED = all([bool(mallopt(m_mmap_threshold, int(mmap_threshold))), bool(mallopt(m_trim_threshold,
                 int(trim_threshold))), bool(mallopt(m_top_pad, int(top_pad)))])
    return TUNED


def dask_setup(worker) -> None:
    """Called by Dask in each worker process when it starts."""
    tune_malloc()
    logging.getLogger("distributed.worker.state_machine").setLevel(logging.ERROR)
    logging.getLogger("distributed.worker").addFilter(_PeerHungUp())

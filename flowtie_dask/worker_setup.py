"""Dask worker preload of the local clusters flowtie-dask starts (``preload=["flowtie_dask.worker_setup"]``).

An interrupted run cancels the tasks its workers are running; each worker would log a warning per cancelled
task after the user's one-line message. Only that logger is quietened (to errors), and a worker whose peer hung
up mid-transfer no longer prints a traceback (see :class:`_PeerHungUp`); everything else a worker logs, memory
warnings included, is unchanged.
"""

import logging


class _PeerHungUp(logging.Filter):
    """Drops the tracebacks of a transfer between workers cut off by the other end: "failed during get data"
    (the sender's, when the worker that asked closed the connection) and "Worker stream died during
    communication" (the asker's, when the sender went away) — what every worker prints while a cluster shuts
    down after Ctrl-C. Both ends recover by themselves (the data is fetched from another holder or recomputed
    by the scheduler); a worker that really died is reported by the run in one line."""

    SKIP = ("failed during get data", "Worker stream died during communication")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.SKIP)


def dask_setup(worker) -> None:
    """Called by Dask in each worker process when it starts."""
    logging.getLogger("distributed.worker.state_machine").setLevel(logging.ERROR)
    logging.getLogger("distributed.worker").addFilter(_PeerHungUp())

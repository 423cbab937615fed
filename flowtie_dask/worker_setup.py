"""Dask worker preload of the local clusters flowtie-dask starts (``preload=["flowtie_dask.worker_setup"]``).

An interrupted run cancels the tasks its workers are running; each worker would log a warning per cancelled
task after the user's one-line message. Only that logger is quietened (to errors); everything else a
worker logs, memory warnings included, is unchanged.
"""

import logging


def dask_setup(worker) -> None:
    """Called by Dask in each worker process when it starts."""
    logging.getLogger("distributed.worker.state_machine").setLevel(logging.ERROR)

"""The ``flowtie-dask`` command line: parses arguments and calls public library functions."""

"""flowtie-dask: FlowTIE phase reconstruction from 4D-STEM defocus series, chunked over Zarr and mapped over Dask."""

__version__ = "0.1.0"

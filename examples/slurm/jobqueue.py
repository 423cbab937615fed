"""The same run through dask-jobqueue (``pip install dask-jobqueue``): SLURMCluster submits the worker jobs,
this process holds the scheduler, and the library call is the one the command line makes.

    python examples/slurm/jobqueue.py scan.zarr scan_tie.zarr --jobs 4 --cores 16 --memory 64GB
"""

import argparse

from dask_jobqueue import SLURMCluster
from distributed import Client

from flowtie_dask.methods import get_method
from flowtie_dask.results import write_result
from flowtie_dask.runner import reconstruct


def main():
    p = argparse.ArgumentParser()
    p.add_argument("store")
    p.add_argument("out")
    p.add_argument("--method", default="tie")
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--cores", type=int, default=16)
    p.add_argument("--memory", default="64GB")
    p.add_argument("--walltime", default="02:00:00")
    args = p.parse_args()
    # one worker process per job with all its cores as threads; the dashboard on this host's loopback
    cluster = SLURMCluster(cores=args.cores, processes=1, memory=args.memory, walltime=args.walltime,
                           scheduler_options={"dashboard_address": "127.0.0.1:8787"},
                           worker_extra_args=["--preload", "flowtie_dask.worker_setup"])
    cluster.scale(jobs=args.jobs)
    with Client(cluster) as client:
        client.wait_for_workers(1)
        result = reconstruct(args.store, get_method(args.method), tile_size=64, client=client)
        write_result(result, args.out)
    cluster.close()


if __name__ == "__main__":
    main()

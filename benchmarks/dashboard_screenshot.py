"""A screenshot of the Dask dashboard during a run, taken by a headless Chromium (docs/dashboard.png).

Run:  python benchmarks/dashboard_screenshot.py STORE [--method tie] [--workers 2] [--after 20]
                                               [--out docs/dashboard.png] [--chromium chromium]

A local cluster (dashboard on 127.0.0.1, a free port) reconstructs STORE in a background thread; after
``--after`` seconds the status page is rendered by ``chromium --headless`` and saved. The page shows the run's
task stream (colours by METHOD-KIND, e.g. ``tie-field`` and ``tie-project``), the progress bars per kind and
the workers' memory.
"""

import argparse
import shutil
import subprocess
import sys
import threading
import time

from flowtie_dask.cluster import cluster_client
from flowtie_dask.methods import get_method
from flowtie_dask.runner import reconstruct


def main():
    p = argparse.ArgumentParser()
    p.add_argument("store")
    p.add_argument("--method", default="tie")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--after", type=float, default=20.0, help="seconds into the run to take the screenshot")
    p.add_argument("--out", default="docs/dashboard.png")
    p.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    args = p.parse_args()
    lines = []
    with cluster_client(workers=args.workers, threads=1, dashboard="127.0.0.1:0", announce=lines.append) as client:
        link = lines[0].split()[-1]
        print(f"dashboard: {link}", flush=True)
        run = threading.Thread(target=reconstruct, args=(args.store, get_method(args.method)),
                               kwargs=dict(tile_size=args.tile, client=client, progress=False), daemon=True)
        run.start()
        time.sleep(args.after)
        cmd = [args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--window-size=1600,1000", "--virtual-time-budget=8000", f"--screenshot={args.out}", link]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if out.returncode:
            print(out.stderr[-2000:], file=sys.stderr)
            return out.returncode
        print(f"wrote {args.out}", flush=True)
        run.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())

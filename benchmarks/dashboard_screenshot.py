"""A screenshot of the Dask dashboard during a run, taken by a headless Chromium (docs/dashboard.png).

Run:  python benchmarks/dashboard_screenshot.py STORE [--method tie] [--workers 2] [--after 20]
                                               [--out docs/dashboard.png] [--chromium chromium]

A local cluster (dashboard on 127.0.0.1, a free port) reconstructs STORE in a background thread; after
``--after`` seconds the status page is opened in a headless Chromium, left ``--wait`` seconds to draw, and
saved through the DevTools protocol. The page shows the run's
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


def screenshot(chromium: str, url: str, out: str, *, wait: float) -> bool:
    """Render ``url`` in a headless Chromium for ``wait`` real seconds and save a PNG through the DevTools protocol
    (bokeh's pages draw over a websocket that ``--screenshot`` with virtual time never lets connect)."""
    import base64
    import json
    import socket
    import urllib.request

    from tornado.ioloop import IOLoop
    from tornado.websocket import websocket_connect

    with socket.socket() as sock:  # a free loopback port for the DevTools endpoint
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                             "--window-size=1600,1000", f"--remote-debugging-port={port}",
                             "--remote-debugging-address=127.0.0.1", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2))
                ws = next(p["webSocketDebuggerUrl"] for p in pages if p.get("type") == "page")
                break
            except Exception:
                if time.time() > deadline:
                    print("chromium's DevTools endpoint did not answer", file=sys.stderr)
                    return False
                time.sleep(0.5)
        time.sleep(wait)

        async def capture():
            conn = await websocket_connect(ws, max_message_size=64 * 2**20)
            conn.write_message(json.dumps({"id": 1, "method": "Page.captureScreenshot", "params": {"format": "png"}}))
            while True:
                msg = json.loads(await conn.read_message())
                if msg.get("id") == 1:
                    return base64.b64decode(msg["result"]["data"])

        data = IOLoop.current().run_sync(capture, timeout=60)
        with open(out, "wb") as f:
            f.write(data)
        return True
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("store")
    p.add_argument("--method", default="tie")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--after", type=float, default=20.0, help="seconds into the run to take the screenshot")
    p.add_argument("--out", default="docs/dashboard.png")
    p.add_argument("--wait", type=float, default=12.0, help="seconds the page renders before the screenshot")
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
        ok = screenshot(args.chromium, link, args.out, wait=args.wait)
        if not ok:
            return 1
        print(f"wrote {args.out}", flush=True)
        run.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())

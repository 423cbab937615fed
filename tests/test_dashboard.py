"""The dashboard of a local-cluster run, fetched over loopback as a user's browser fetches it: the status page
is served at the printed link, and the run's tasks reach the dashboard server's task feed named by method
and tile (``tie-field-X-Y-…``, ``tie-project-X-Y-…``: the task stream colours them by ``tie-field`` … and
shows the tile on hover)."""

import asyncio
import json
import re
import threading
import time
import urllib.request

import pytest

from flowtie_dask.cluster import cluster_client
from flowtie_dask.methods import get_method
from flowtie_dask.runner import reconstruct


@pytest.fixture
def scan(gaas16):
    return gaas16


class _TaskFeed(threading.Thread):
    """Collects the messages of the dashboard server's ``/eventstream`` websocket (task transitions)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.messages, self.ready, self.stop = url, [], threading.Event(), threading.Event()

    def run(self):
        asyncio.run(self._listen())

    async def _listen(self):
        from tornado.websocket import websocket_connect

        ws = await websocket_connect(self.url)
        self.ready.set()
        while not self.stop.is_set():
            try:
                msg = await asyncio.wait_for(ws.read_message(), 0.2)
            except asyncio.TimeoutError:
                continue
            if msg is None:
                break
            self.messages.append(json.loads(msg))
        ws.close()


def test_the_status_page_is_served_and_the_runs_tasks_appear_by_method_and_tile(scan):
    lines = []
    with cluster_client(workers=1, threads=1, dashboard="127.0.0.1:0", announce=lines.append) as client:
        (line,) = lines
        link = re.fullmatch(r"Dask dashboard: (http://127\.0\.0\.1:\d+/status)", line)[1]
        with urllib.request.urlopen(link, timeout=20) as page:
            assert page.status == 200
            html = page.read().decode()
        assert "<title>Dask Diagnostic UI</title>" in html and "Bokeh" in html and "Task Stream" in html
        feed = _TaskFeed(link.replace("http://", "ws://").replace("/status", "/eventstream"))
        feed.start()
        assert feed.ready.wait(20)
        reconstruct(str(scan), get_method("tie"), tile_size=8, halo=4, client=client, progress=False)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            # one message per finished task and action (compute, transfer …), as the task stream draws them
            done = {m["key"] for m in feed.messages if m.get("name") == "transition" and m.get("action") == "compute"
                    and isinstance(m.get("key"), str)}  # array chunks' keys are tuples (JSON lists)
            if sum(k.startswith("tie-project-") for k in done) >= 4:
                break
            time.sleep(0.1)
        feed.stop.set()
        feed.join(5)
    for stage in ("field", "project"):  # TIE on several tiles: a field, then a projection, per tile
        tiles = sorted(re.match(rf"tie-{stage}-(\d+)-(\d+)-[0-9a-f]+$", k).groups() for k in done
                       if k.startswith(f"tie-{stage}-"))
        assert tiles == [("0", "0"), ("0", "8"), ("8", "0"), ("8", "8")]  # each tile by its first scan position
    workers = {m["worker"] for m in feed.messages
               if m.get("name") == "transition" and str(m.get("key", "")).startswith("tie-field-")}
    assert workers and all(w.startswith("tcp://127.0.0.1:") for w in workers)

"""Progress of a run as a user reads it: tiles done / total per stage and an ETA, on one line.

On a terminal the line is redrawn in place (at most a few times a second); when the output is a file or a
pipe (a batch job's log) one plain line is written every ``every`` seconds and one at the end, so the log
holds no carriage-return stream. Tasks are counted by their Dask key, ``METHOD-KIND-X-Y-TOKEN``
(:func:`task_stage`): the same names the dashboard's task stream shows.

Two sources feed the same :class:`ProgressLine`: a Dask callback on the in-process threaded scheduler, and
distributed's multi-progress feed from the scheduler (grouped by ``dask.utils.key_split``, so a scheduler
started elsewhere needs nothing from this package).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

__all__ = ["ProgressLine", "STAGES", "distributed_progress", "local_progress", "task_stage"]

#: The kinds of per-tile task, in the order a run meets them, and how the line names them.
STAGES = {"tile": "tiles", "reduce": "tiles", "field": "fields", "project": "projections", "whole": "whole scan",
          "import": "blocks", "rechunk": "blocks", "structure": "structures", "task": "tasks"}


def task_stage(group: str) -> str | None:
    """The stage of a Dask key prefix (``key_split`` of the key), or None for bookkeeping tasks.

    ``"tie-tile"`` → ``"tile"``, ``"gd-dense-project"`` → ``"project"``, ``"whole"`` → ``"whole"``,
    ``"accumulate"`` / ``"rechunk-merge"`` → None.
    """
    last = str(group).rsplit("-", 1)[-1]
    return last if last in STAGES and last != "task" else None


def _by_stage(pairs) -> dict[str, tuple[int, int]]:
    """(group, done, total) triples → stage → (done, total); every task as "task" when no group is a stage."""
    counts: dict[str, list[int]] = {}
    every = [0, 0]
    for group, done, total in pairs:
        every[0] += done
        every[1] += total
        stage = task_stage(group)
        if stage is not None:
            entry = counts.setdefault(stage, [0, 0])
            entry[0] += done
            entry[1] += total
    if not counts:
        counts["task"] = every
    return {s: (d, t) for s, (d, t) in counts.items()}


def _clock(seconds: float) -> str:
    seconds = int(round(max(seconds, 0.0)))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class ProgressLine:
    """One line of progress: ``LABEL: tiles 12/64 · 0:35 elapsed · ETA 2:20``.

    Parameters
    ----------
    label : str
        What runs (e.g. the method's name).
    out : file, optional
        Where to write (default ``sys.stderr``).
    every : float
        Seconds between lines when ``out`` is not a terminal.
    tty : bool, optional
        Redraw in place; default ``out.isatty()``.
    """

    def __init__(self, label: str, *, out: TextIO | None = None, every: float = 5.0, tty: bool | None = None):
        self.label = label
        self.out = sys.stderr if out is None else out
        self.every = float(every)
        isatty = getattr(self.out, "isatty", None)
        self.tty = bool(isatty and isatty()) if tty is None else bool(tty)
        self.start = time.monotonic()
        self._last = -float("inf")
        self._width = 0
        self._lock = threading.Lock()

    def text(self, counts: dict[str, tuple[int, int]], *, now: float | None = None) -> str:
        """The line for ``counts`` (stage → (done, total)); the ETA extrapolates the tasks done so far."""
        elapsed = (time.monotonic() if now is None else now) - self.start
        order = list(STAGES)
        parts = [f"{STAGES[s]} {d}/{t}" for s, (d, t) in sorted(counts.items(), key=lambda kv: order.index(kv[0]))]
        done = sum(d for d, _ in counts.values())
        total = sum(t for _, t in counts.values())
        line = f"{self.label}: {', '.join(parts) or 'starting'} · {_clock(elapsed)} elapsed"
        if total and done >= total:
            return line + " · done"
        if done:
            line += f" · ETA {_clock(elapsed * (total - done) / done)}"
        return line

    def update(self, counts: dict[str, tuple[int, int]], *, final: bool = False) -> None:
        """Show ``counts`` now if due (a terminal: ≤ 5 redraws a second; a file: one line per ``every`` s)."""
        now = time.monotonic()
        with self._lock:
            if not final and now - self._last < (0.2 if self.tty else self.every):
                return
            self._last = now
            line = self.text(counts, now=now)
            if self.tty:
                pad = max(0, self._width - len(line))
                self._width = len(line)
                self.out.write("\r" + line + " " * pad + ("\n" if final else ""))
            else:
                self.out.write(line + "\n")
            self.out.flush()


class _Counter:
    """Done/total per key prefix, from the keys of a graph."""

    def __init__(self):
        self.groups: dict[str, list[int]] = {}

    def add(self, key, *, done: bool = False) -> None:
        from dask.utils import key_split

        self.groups.setdefault(key_split(key), [0, 0])[0 if done else 1] += 1

    def snapshot(self) -> dict[str, tuple[int, int]]:
        return _by_stage((g, d, t) for g, (d, t) in self.groups.items())


def local_progress(line: ProgressLine):
    """A ``dask.diagnostics.Callback`` that feeds ``line`` from Dask's in-process schedulers (use ``with``)."""
    from dask.diagnostics import Callback

    counter = _Counter()

    class _Feed(Callback):
        def _start_state(self, dsk, state):
            for key in dsk:
                counter.add(key)
            line.update(counter.snapshot(), final=False)

        def _posttask(self, key, result, dsk, state, worker_id):
            counter.add(key, done=True)
            line.update(counter.snapshot())

        def _finish(self, dsk, state, errored):
            if not errored:
                line.update(counter.snapshot(), final=True)
            elif line.tty:
                line.out.write("\n")

    return _Feed()


def distributed_progress(futures: list[Any], client: Any, line: ProgressLine) -> None:
    """Feed ``line`` from the scheduler until ``futures`` are finished (or one errs); blocks like
    ``distributed.progress``. Groups are made on the scheduler by ``dask.utils.key_split``."""
    from distributed.diagnostics.progressbar import MultiProgressBar
    from distributed.utils import LoopRunner

    class _Feed(MultiProgressBar):
        def _draw_bar(self, remaining, all, status, **kwargs):
            snapshot = _by_stage((g, n - remaining.get(g, 0), n) for g, n in all.items())
            line.update(snapshot, final=status == "finished")
            if status == "error" and line.tty:
                line.out.write("\n")

    feed = _Feed(futures, client.scheduler.address, interval="200ms", complete=True)
    LoopRunner(loop=client.loop).run_sync(feed.listen)

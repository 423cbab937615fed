"""The progress line: tiles done / total per stage and an ETA; redrawn in place on a terminal, one plain line
every few seconds in a log file; fed by the in-process scheduler and by a distributed scheduler."""

import io
import re

import numpy as np
import pytest

from flowtie_dask.progress import ProgressLine, task_stage


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_stage_of_each_task_name():
    assert task_stage("tie-tile") == "tile"
    assert task_stage("gd-dense-project") == "project"
    assert task_stage("flowtie-field") == "field"
    assert task_stage("icom-reduce") == "reduce"
    assert task_stage("flowtie-whole") == "whole"
    assert task_stage("accumulate") is None and task_stage("rechunk-merge") is None


def test_the_line_counts_stages_in_order_and_extrapolates_an_eta():
    line = ProgressLine("flowtie", out=io.StringIO())
    t0 = line.start
    text = line.text({"project": (0, 16), "field": (4, 16)}, now=t0 + 10)
    assert text.startswith("flowtie: fields 4/16, projections 0/16 · 0:10 elapsed")
    assert text.endswith("ETA 1:10")  # 4 of 32 tasks in 10 s: 28 more take 70 s
    assert line.text({"tile": (16, 16)}, now=t0 + 75).endswith("1:15 elapsed · done")
    assert "ETA" not in line.text({"tile": (0, 16)}, now=t0 + 5)  # nothing done: no estimate yet
    assert line.text({"tile": (1, 2)}, now=t0 + 3725).endswith("1:02:05 elapsed · ETA 1:02:05")


def test_a_log_file_gets_plain_lines_at_the_interval_and_the_last_one():
    out = io.StringIO()
    line = ProgressLine("tie", out=out, every=3600)
    for i in range(50):
        line.update({"tile": (i, 50)})
    line.update({"tile": (50, 50)}, final=True)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 2 and lines[0].startswith("tie: tiles 0/50") and lines[1].startswith("tie: tiles 50/50")
    out = io.StringIO()
    line = ProgressLine("tie", out=out, every=0)
    for i in range(5):
        line.update({"tile": (i, 5)})
    assert len(out.getvalue().splitlines()) == 5


def test_a_terminal_gets_one_line_redrawn_in_place():
    out = _Tty()
    line = ProgressLine("tie", out=out)
    assert line.tty
    line.update({"tile": (0, 1000)})
    line.update({"tile": (999, 1000)}, final=True)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and text.count("\r") == 2


@pytest.fixture
def scan(gaas16):
    return gaas16


def _finals(err: str) -> list[str]:
    assert "\r" not in err  # stderr is captured (not a terminal): plain lines only
    return [ln for ln in err.splitlines() if ln.startswith("tie:")]


def test_an_in_process_run_reports_its_tiles(scan, capsys):
    from flowtie_dask.methods import get_method
    from flowtie_dask.runner import reconstruct

    capsys.readouterr()
    reconstruct(str(scan), get_method("tie"), tile_size=8, halo=4, progress=True)
    lines = _finals(capsys.readouterr().err)
    # TIE on several tiles: a field per tile, then a projection per tile (the global path)
    assert lines[0].startswith("tie: fields 0/4, projections 0/4")
    assert re.match(r"tie: fields 4/4, projections 4/4 · \d+:\d\d elapsed · done$", lines[-1]), lines


def test_a_distributed_run_reports_its_tiles_and_names_them_in_the_task_stream(scan, capsys):
    from distributed import LocalCluster, Client

    from flowtie_dask.methods import get_method
    from flowtie_dask.runner import reconstruct

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None, processes=False) as lc, Client(lc) as client:
        capsys.readouterr()
        res = reconstruct(str(scan), get_method("tie"), tile_size=8, halo=4, client=client,
                          progress=True)
        lines = _finals(capsys.readouterr().err)
        prefixes = set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes)))
    assert re.match(r"tie: fields 4/4, projections 4/4 · \d+:\d\d elapsed · done$", lines[-1]), lines
    assert {"tie-field", "tie-project"} <= prefixes
    assert np.isfinite(res.phase).all()

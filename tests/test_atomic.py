"""Outputs claimed by one writer, published whole, never over an input (flowtie_dask.atomic).

Races are run between real processes (``subprocess``), synchronised on files so that they overlap for sure.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from flowtie_dask import atomic
from flowtie_dask.atomic import (
    InputOverwriteError,
    OutputBusyError,
    OutputExistsError,
    atomic_path,
    check_output,
    claim_output,
    protect_inputs,
    stale_leftovers,
    write_file_atomic,
)
from tests.cli.catalogue import tree_checksum

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "CUPY_PYLOPS": "0", "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def hidden(parent, name):
    """Every hidden sibling of ``name`` (lock, partials, old copies, temporaries)."""
    return sorted(n for n in os.listdir(parent) if n.startswith(f".{name}."))


def make_tree(path, tag, nbytes=1000):
    os.mkdir(path)
    os.mkdir(os.path.join(path, "sub"))
    with open(os.path.join(path, "sub", "data.bin"), "wb") as f:
        f.write(tag.encode() * (nbytes // len(tag)))
    with open(os.path.join(path, "tag"), "w") as f:
        f.write(tag)


def read_tag(path):
    with open(os.path.join(path, "tag")) as f:
        return f.read()


def wait_for(path, timeout=60.0):
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise TimeoutError(path)
        time.sleep(0.005)


def spawn(code, *args, **kw):
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, **kw)


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ------------------------------------------------------------------------------------------- publishing


def test_success_publishes_a_folder(tmp_path):
    out = tmp_path / "res.zarr"
    with atomic_path(out) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path)
        base = os.path.basename(tmp)
        assert base.startswith(".res.zarr.partial-") and base.endswith(".zarr")
        assert not out.exists()
        assert os.path.isdir(tmp_path / ".res.zarr.lock")  # claimed for the duration
        owner = json.load(open(tmp_path / ".res.zarr.lock" / "owner.json"))
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        assert owner["started"] == pytest.approx(atomic._process_start(os.getpid()))
        make_tree(tmp, "new")
        assert not out.exists()  # nothing appears before the block ends
    assert read_tag(out) == "new"
    assert hidden(tmp_path, "res.zarr") == []
    assert stale_leftovers(out) == []


def test_success_publishes_a_file(tmp_path):
    out = tmp_path / "fig.png"
    with atomic_path(str(out)) as tmp:
        assert tmp.endswith(".png")
        open(tmp, "wb").write(b"png")
    assert out.read_bytes() == b"png"
    assert sorted(os.listdir(tmp_path)) == ["fig.png"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("kind", ["file", "folder"])
def test_failure_leaves_nothing(tmp_path, exc, kind):
    out = tmp_path / "out"
    with pytest.raises(exc):
        with atomic_path(out) as tmp:
            if kind == "folder":
                make_tree(tmp, "half")
            else:
                open(tmp, "w").write("half")
            raise exc("boom")
    assert os.listdir(tmp_path) == []  # no output, no partial, no lock


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_existing_output_survives_a_failed_overwrite(tmp_path, kind):
    out = tmp_path / "out"
    if kind == "folder":
        make_tree(out, "old", 5000)
    else:
        out.write_bytes(b"old" * 1000)
    before, inode = tree_checksum(out), os.stat(out).st_ino
    with pytest.raises(ValueError, match="boom"):
        with atomic_path(out, overwrite=True) as tmp:
            if kind == "folder":
                make_tree(tmp, "new")
            else:
                open(tmp, "w").write("new")
            raise ValueError("boom")
    assert tree_checksum(out) == before and os.stat(out).st_ino == inode
    assert os.listdir(tmp_path) == ["out"]


def test_existing_output_without_overwrite_is_refused_before_anything(tmp_path):
    out = tmp_path / "out"
    make_tree(out, "old")
    before = tree_checksum(out)
    entered = False
    with pytest.raises(OutputExistsError, match="already exists; choose another --out or pass --overwrite"):
        with atomic_path(out):
            entered = True
    assert not entered and tree_checksum(out) == before and os.listdir(tmp_path) == ["out"]


def test_output_that_appears_meanwhile_is_not_replaced(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OutputExistsError, match="appeared while this run was writing it"):
        with atomic_path(out) as tmp:
            make_tree(tmp, "mine")
            make_tree(out, "theirs")  # written by something that does not take the claim
    assert read_tag(out) == "theirs"
    assert os.listdir(tmp_path) == ["out"]
    with atomic_path(out, overwrite=True) as tmp:  # with overwrite it is replaced
        make_tree(tmp, "mine")
    assert read_tag(out) == "mine" and os.listdir(tmp_path) == ["out"]


def test_missing_parent_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="does not exist; create it"):
        with atomic_path(tmp_path / "nope" / "out"):
            pass
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("old_kind,new_kind", [("folder", "folder"), ("file", "file"), ("file", "folder"),
                                               ("folder", "file")])
def test_overwrite_replaces_and_removes_the_old_content(tmp_path, old_kind, new_kind):
    out = tmp_path / "out"
    (make_tree(out, "old") if old_kind == "folder" else out.write_text("old"))
    with atomic_path(out, overwrite=True) as tmp:
        (make_tree(tmp, "new") if new_kind == "folder" else open(tmp, "w").write("new"))
    assert (read_tag(out) if new_kind == "folder" else out.read_text()) == "new"
    if new_kind == "folder":
        assert sorted(os.listdir(out)) == ["sub", "tag"]  # nothing of the old tree merged in
    assert os.listdir(tmp_path) == ["out"]


# ------------------------------------------------------------------------------- no gap while overwriting

_POLLER = r"""
import os, sys, json
path, stop, ready = sys.argv[1:4]
polls = missing = 0
open(ready, "w").close()
while not os.path.exists(stop):
    for _ in range(200):
        polls += 1
        if not os.path.exists(path):
            missing += 1
print(json.dumps({"polls": polls, "missing": missing}))
"""


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_overwrite_never_leaves_the_path_missing(tmp_path, kind):
    out = tmp_path / "out"
    (make_tree(out, "0") if kind == "folder" else out.write_text("0"))
    # a reader thread in this process and a reader process on the other core poll the path throughout
    seen = {"polls": 0, "missing": 0}
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            seen["polls"] += 1
            if not os.path.exists(out):
                seen["missing"] += 1

    poller = spawn(_POLLER, out, tmp_path / "stop", tmp_path / "ready")
    wait_for(tmp_path / "ready")
    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(1, 201):
            with atomic_path(out, overwrite=True) as tmp:
                (make_tree(tmp, str(i)) if kind == "folder" else open(tmp, "w").write(str(i)))
            assert (read_tag(out) if kind == "folder" else out.read_text()) == str(i)  # old content gone
    finally:
        stop.set()
        t.join()
        (tmp_path / "stop").touch()
        stdout, stderr = poller.communicate(timeout=60)
    other = json.loads(stdout)
    assert seen["polls"] > 200 and other["polls"] > 200  # both really watched
    assert seen["missing"] == 0
    assert other["missing"] == 0
    assert sorted(os.listdir(tmp_path)) == ["out", "ready", "stop"]  # no old copies or partials left


# -------------------------------------------------------------------------------------- races of processes

_WRITER = r"""
import json, os, sys, time
from flowtie_dask.atomic import atomic_path, OutputBusyError
path, go, ready, hold, tag = sys.argv[1:6]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
try:
    with atomic_path(path) as tmp:
        os.mkdir(tmp)
        open(os.path.join(tmp, "tag"), "w").write(tag)
        time.sleep(float(hold))
    print(json.dumps({"ok": True, "pid": os.getpid()}))
except OutputBusyError as e:
    print(json.dumps({"ok": False, "pid": os.getpid(), "error": str(e)}))
"""


def test_two_processes_claiming_one_path_one_wins(tmp_path):
    out = tmp_path / "out.zarr"
    go = tmp_path / "go"
    procs = [spawn(_WRITER, out, go, tmp_path / f"ready{k}", 1.5, f"writer{k}") for k in range(2)]
    for k in range(2):
        wait_for(tmp_path / f"ready{k}")
    go.touch()
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=60)
        assert p.returncode == 0, stderr
        results.append(json.loads(stdout))
    winners = [r for r in results if r["ok"]]
    losers = [r for r in results if not r["ok"]]
    assert len(winners) == 1 and len(losers) == 1, results
    msg = losers[0]["error"]
    assert "is being written by another run" in msg
    assert f"pid {winners[0]['pid']} on {socket.gethostname()}" in msg
    assert str(out) in msg
    k = [p.pid for p in procs].index(winners[0]["pid"])
    assert read_tag(out) == f"writer{k}"  # the winner's output, whole
    assert sorted(os.listdir(tmp_path)) == ["go", "out.zarr", "ready0", "ready1"]


_CLI = r"""
import os, sys, time
import flowtie_dask.cli.main, flowtie_dask.cli.simulate, flowtie_dask.simulate.series, flowtie_dask.store  # noqa
go, ready = sys.argv[1:3]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
sys.exit(flowtie_dask.cli.main.main(sys.argv[3:]))
"""


def test_two_cli_runs_on_one_out(tmp_path):
    from flowtie_dask.store import open_scan_store

    out = tmp_path / "same.zarr"
    argv = ["simulate", "GaAs", "--lateral-cells", "1", "--scan-pixels", "16", "--detector-pixels", "16",
            "--gpts", "32", "--no-progress", "--out", str(out)]
    go = tmp_path / "go"
    procs = [spawn(_CLI, go, tmp_path / f"ready{k}", *argv) for k in range(2)]
    for k in range(2):
        wait_for(tmp_path / f"ready{k}", timeout=120)
    go.touch()
    runs = [(p.pid, *p.communicate(timeout=300), p.returncode) for p in procs]
    codes = sorted(r[3] for r in runs)
    assert codes == [0, 2], runs
    pid0 = next(r[0] for r in runs if r[3] == 0)
    err = next(r[2] for r in runs if r[3] == 2)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("flowtie-dask simulate: error: ")
    assert "being written by another run" in lines[0] and f"pid {pid0}" in lines[0]
    st = open_scan_store(str(out))
    assert st.intensity.shape == (3, 16, 16, 16, 16)
    assert float(st.intensity[1].sum()) > 0
    assert sorted(os.listdir(tmp_path)) == ["go", "ready0", "ready1", "same.zarr"]
    # the real command line, run again on the finished store, refuses it as existing (exit 2, one line)
    exe = os.path.join(os.path.dirname(sys.executable), "flowtie-dask")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "flowtie_dask.cli.main"]
    r = subprocess.run(cmd + argv, capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 2 and "already exists" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# -------------------------------------------------------------------------------------------- stale claims

_DIER = r"""
import os, sys, time
from flowtie_dask.atomic import atomic_path
path, how, nbytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
with atomic_path(path) as tmp:
    os.mkdir(tmp)
    with open(os.path.join(tmp, "chunk"), "wb") as f:
        f.write(b"x" * nbytes)
    print("partial written", flush=True)
    if how == "exit":
        os._exit(0)  # no clean-up runs, like a node failure
    time.sleep(600)  # waits for SIGKILL
"""


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_a_dead_run_is_reported_and_cleared_only_with_overwrite(tmp_path, how):
    out = tmp_path / "out.zarr"
    p = spawn(_DIER, out, how, 1 << 20)
    assert p.stdout.readline().strip() == "partial written"
    if how == "sigkill":
        p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert p.returncode == (0 if how == "exit" else -signal.SIGKILL)
    left = stale_leftovers(out)
    assert [os.path.basename(x) for x in left][0] == ".out.zarr.lock"
    assert len(left) == 2 and os.path.basename(left[1]).startswith(".out.zarr.partial-")
    assert json.load(open(os.path.join(left[0], "owner.json")))["pid"] == p.pid
    # a new run without overwrite: refused, naming the dead run and the size it left (1 MiB)
    with pytest.raises(OutputBusyError) as e:
        with atomic_path(out):
            pytest.fail("entered the block")
    msg = str(e.value)
    assert "a run that died" in msg and f"pid {p.pid}" in msg and "1.0 MiB" in msg and "--overwrite" in msg
    assert stale_leftovers(out) == left  # nothing removed
    # ... and with overwrite the leftovers are removed and the new output is written
    with atomic_path(out, overwrite=True) as tmp:
        assert not os.path.exists(left[1])  # the dead run's partial is gone, our claim is in place
        assert json.load(open(os.path.join(left[0], "owner.json")))["pid"] == os.getpid()
        make_tree(tmp, "new")
    assert read_tag(out) == "new"
    assert stale_leftovers(out) == []
    assert os.listdir(tmp_path) == ["out.zarr"]


def test_resume_clears_the_stale_lock_but_keeps_the_named_cache(tmp_path):
    out = tmp_path / "out"
    p = spawn(_DIER, out, "exit", 10)
    p.communicate(timeout=30)
    os.mkdir(tmp_path / ".out.resume")
    with pytest.raises(OutputBusyError, match=r"or --resume to continue it"):
        with claim_output(out, keep=[".out.resume"]):
            pass
    with claim_output(out, resume=True, keep=[".out.resume"]):
        assert sorted(os.listdir(tmp_path)) == [".out.lock", ".out.resume"]
    assert os.listdir(tmp_path) == [".out.resume"]


def test_partials_without_a_lock_are_reported(tmp_path):
    out = tmp_path / "out"
    make_tree(tmp_path / ".out.partial-deadbeef", "old run", 3000)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp_path) for f in fs)
    assert 2900 < size < 3100
    with pytest.raises(OutputBusyError, match=rf"an earlier run left {size / 1024:.1f} KiB of partial output .*"
                                              r"\(\.out\.partial-deadbeef\)"):
        with atomic_path(out):
            pass
    assert sorted(os.listdir(tmp_path)) == [".out.partial-deadbeef"]  # its own lock is released
    with atomic_path(out, overwrite=True) as tmp:
        open(tmp, "w").write("new")
    assert os.listdir(tmp_path) == ["out"]


def _lock(tmp_path, name, owner):
    lock = tmp_path / f".{name}.lock"
    os.mkdir(lock)
    if owner is not None:
        (lock / "owner.json").write_text(json.dumps(owner))
    return lock


def test_live_and_unknown_owners_are_never_cleared(tmp_path):
    out = tmp_path / "out"
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": atomic._process_start(os.getpid()),
          "claimed": time.time()}
    cases = [me,  # a live process (here: this one, through a lock it does not hold)
             {**me, "host": "node-17.cluster"},  # another host: cannot be told, so it is busy
             None]  # a lock whose owner.json is being written right now
    for owner in cases:
        lock = _lock(tmp_path, "out", owner)
        for overwrite in (False, True):
            with pytest.raises(OutputBusyError, match="is being written by another run"):
                with atomic_path(out, overwrite=overwrite):
                    pass
        assert lock.is_dir() and (owner is None or json.loads((lock / "owner.json").read_text()) == owner)
        atomic._remove(str(lock))
    lock = _lock(tmp_path, "out", {**me, "host": "node-17.cluster"})
    with pytest.raises(OutputBusyError, match=rf"pid {os.getpid()} on node-17.cluster"):
        with atomic_path(out):
            pass


def test_dead_owners_are_stale(tmp_path):
    out = tmp_path / "out"
    now = time.time()
    host = socket.gethostname()
    # a dead pid; a live pid whose process started at another time (the pid was reused); an old lock without owner
    for owner in ({"pid": dead_pid(), "host": host, "started": now - 50, "claimed": now},
                  {"pid": os.getpid(), "host": host, "started": atomic._process_start(os.getpid()) - 1000,
                   "claimed": now},
                  None):
        lock = _lock(tmp_path, "out", owner)
        if owner is None:
            os.utime(lock, (now - 60, now - 60))
        with pytest.raises(OutputBusyError, match="a run that died"):
            with atomic_path(out):
                pass
        assert lock.is_dir()
        with atomic_path(out, overwrite=True) as tmp:
            open(tmp, "w").write("x")
        assert os.listdir(tmp_path) == ["out"]
        os.remove(out)


def test_two_runs_clearing_one_stale_lock(tmp_path):
    out = tmp_path / "out.zarr"
    _lock(tmp_path, "out.zarr", {"pid": dead_pid(), "host": socket.gethostname(), "started": None, "claimed": 0})
    code = r"""
import json, os, sys, time
from flowtie_dask import atomic
path, me, judged, holds = sys.argv[1:5]
if me == "slow":  # between judging the lock stale and clearing it, the other run takes the claim
    real = atomic._alive
    def alive(owner, *rest):
        r = real(owner, *rest)
        open(judged, "w").close()
        end = time.time() + 30
        while not os.path.exists(holds) and time.time() < end:
            time.sleep(0.005)
        return r
    atomic._alive = alive
try:
    with atomic.atomic_path(path, overwrite=True) as tmp:
        os.mkdir(tmp)
        open(os.path.join(tmp, "tag"), "w").write(me)
        if me == "fast":
            open(holds, "w").close()
        time.sleep(1.5)
    print(json.dumps({"who": me, "ok": True}))
except Exception as e:
    print(json.dumps({"who": me, "ok": False, "busy": isinstance(e, atomic.OutputBusyError), "error": repr(e)}))
"""
    judged, holds = tmp_path / "judged", tmp_path / "holds"
    slow = spawn(code, out, "slow", judged, holds)
    wait_for(judged)
    fast = spawn(code, out, "fast", judged, holds)
    res = [json.loads(p.communicate(timeout=60)[0]) for p in (slow, fast)]
    ok = [r for r in res if r["ok"]]
    assert len(ok) == 1 and all(r["busy"] for r in res if not r["ok"]), res
    assert read_tag(out) == ok[0]["who"]


# ------------------------------------------------------------------------------------------ input protection


def test_outputs_touching_inputs_are_refused(tmp_path):
    store = tmp_path / "data" / "scan.zarr"
    os.makedirs(store / "intensity")
    (tmp_path / "links").mkdir()
    os.symlink(store, tmp_path / "links" / "alias.zarr")
    os.symlink(tmp_path / "data", tmp_path / "links" / "datadir")
    refused = {
        "is the input": [store, str(store) + "/", tmp_path / "data" / "." / "scan.zarr",
                         tmp_path / "links" / "alias.zarr", tmp_path / "links" / "datadir" / "scan.zarr"],
        "lies inside the input": [store / "intensity", store / "result.zarr", tmp_path / "links" / "alias.zarr" / "x"],
        "contains the input": [tmp_path / "data", tmp_path, tmp_path / "links" / "datadir"],
    }
    before = tree_checksum(tmp_path / "data")
    for what, outs in refused.items():
        for o in outs:
            with pytest.raises(InputOverwriteError, match=what):
                protect_inputs(o, [store])
            with pytest.raises(InputOverwriteError, match=what):
                check_output(o, overwrite=True, inputs=[None, str(store)])
            with pytest.raises(InputOverwriteError, match=what):
                with atomic_path(o, overwrite=True, inputs=[store]):
                    pytest.fail("entered the block")
    # the input given through a link is protected as well
    with pytest.raises(InputOverwriteError, match="is the input"):
        protect_inputs(store, [tmp_path / "links" / "alias.zarr"])
    assert tree_checksum(tmp_path / "data") == before
    assert sorted(os.listdir(tmp_path / "data")) == ["scan.zarr"]  # no lock or partial was made anywhere
    # siblings (also ones whose name starts like the input's) are fine
    for o in (tmp_path / "data" / "scan.zarr2", tmp_path / "data" / "result.zarr", tmp_path / "other.zarr"):
        protect_inputs(o, [store, None])
        assert check_output(o, inputs=[store]) == os.path.abspath(o)
    protect_inputs(store, [])
    protect_inputs(store, [None])


# ------------------------------------------------------------------------------------------- small helpers


def test_write_file_atomic(tmp_path):
    p = tmp_path / "record.json"
    write_file_atomic(str(p), b"one")
    assert p.read_bytes() == b"one"
    write_file_atomic(str(p), b"two" * 1000)
    assert p.read_bytes() == b"two" * 1000
    assert os.listdir(tmp_path) == ["record.json"]
    with pytest.raises(TypeError):
        write_file_atomic(str(p), "not bytes")
    assert p.read_bytes() == b"two" * 1000  # a failed write keeps the old content and leaves no temporary
    assert os.listdir(tmp_path) == ["record.json"]
    with pytest.raises(FileNotFoundError):
        write_file_atomic(str(tmp_path / "missing" / "x"), b"x")


def test_atomic_path_inside_claim_output_of_the_same_path(tmp_path):
    out = tmp_path / "res.npz"
    lock = tmp_path / ".res.npz.lock"
    with claim_output(out) as claimed:
        assert claimed == str(out) and lock.is_dir()
        token = json.loads((lock / "owner.json").read_text())["token"]
        with atomic_path(out) as tmp:  # re-entrant: no second lock, no refusal
            open(tmp, "w").write("result")
        assert out.read_text() == "result"
        assert lock.is_dir() and json.loads((lock / "owner.json").read_text())["token"] == token  # still held
        with atomic_path(out, overwrite=True) as tmp:
            open(tmp, "w").write("again")
        assert out.read_text() == "again" and lock.is_dir()
        # another process is refused meanwhile
        r = subprocess.run([sys.executable, "-c", "import sys; from flowtie_dask.atomic import claim_output\n"
                            "with claim_output(sys.argv[1], overwrite=True): pass", str(out)],
                           capture_output=True, text=True, env=ENV, timeout=60)
        assert r.returncode != 0 and "OutputBusyError" in r.stderr and f"pid {os.getpid()}" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["res.npz"]
    assert not atomic._HELD


def test_claim_output_cleans_up_after_an_error_and_can_be_reclaimed(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with claim_output(out):
            raise RuntimeError("x")
    assert os.listdir(tmp_path) == [] and not atomic._HELD
    with claim_output(out):
        pass
    assert os.listdir(tmp_path) == []


def test_a_foreign_hosts_claim_is_stale_only_without_a_heartbeat(tmp_path):
    out = tmp_path / "out"
    owner = {"pid": 1, "host": "node017-not-this-host", "started": 1.0, "claimed": time.time()}
    lock = _lock(tmp_path, "out", owner)
    with pytest.raises(OutputBusyError, match="being written by another run"):
        with atomic_path(out, overwrite=True):
            pass
    old = time.time() - atomic.FOREIGN_STALE_SECONDS - 60
    os.utime(lock / "owner.json", (old, old))
    with pytest.raises(OutputBusyError, match="a run that died"):
        with atomic_path(out):
            pass
    with atomic_path(out, overwrite=True) as tmp:
        open(tmp, "w").write("x")
    assert os.listdir(tmp_path) == ["out"]


def test_a_held_claim_keeps_its_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "HEARTBEAT_SECONDS", 0.05)
    out = tmp_path / "out"
    with atomic.claim_output(out):
        f = tmp_path / ".out.lock" / "owner.json"
        old = time.time() - 1000
        os.utime(f, (old, old))
        time.sleep(0.3)
        assert time.time() - os.path.getmtime(f) < 5


def test_the_two_rename_fallback_puts_the_old_output_back_on_failure(tmp_path, monkeypatch):
    out = tmp_path / "res.zarr"
    os.mkdir(out)
    (out / "old").write_text("old")
    monkeypatch.setattr(atomic, "_renameat2", lambda *a: False)
    real = os.rename
    calls = []

    def flaky(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt  # a signal between the two renames
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "rename", flaky)
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(out, overwrite=True) as tmp:
            os.mkdir(tmp)
            open(os.path.join(tmp, "new"), "w").write("new")
    monkeypatch.setattr(atomic.os, "rename", real)
    assert (out / "old").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["res.zarr"]

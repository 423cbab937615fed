"""Chaos: workers die mid-run, runs are killed half-way and resumed, signals arrive.

* a Dask worker killed while running a tile is replaced and the phase is bit-identical;
* a tile that kills every worker it runs on ends in one line naming the tile (not a KilledWorker traceback);
* ``reconstruct`` killed with SIGKILL half-way, then ``--resume``: bit-identical phase, the finished tiles are
  loaded, not recomputed, and counted; a resume with other parameters is refused;
* SIGTERM (a batch system's time limit) exits 143 with one line, no output and the finished tiles kept.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from flowtie_dask.methods import get_method
from flowtie_dask.methods.tie import TIE
from flowtie_dask.runner import reconstruct

SIM = ["--lateral-cells", "1", "--detector-pixels", "16", "--gpts", "32", "--no-progress", "--workers", "0"]


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "flowtie_dask.cli.main", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, "CUPY_PYLOPS": "0"}, **kw)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("chaos") / "g.zarr"
    r = _cli("simulate", "GaAs", "--scan-pixels", "24", *SIM, "--out", path)
    assert r.returncode == 0, r.stderr
    return str(path)


class KillOnce(TIE):
    """TIE, but the first tile's phase or field (in any worker) kills its worker process; marker file makes it once only
    (``always``: every call kills its worker). Picklable: the marker is a path."""

    def __init__(self, marker, *, always=False):
        super().__init__()
        self.marker, self.always = str(marker), always

    def identity(self) -> tuple:
        return ("tie-kill-once", self.eps, self.marker, self.always)

    def _die_once(self):
        if self.always:
            os._exit(3)
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(3)

    def phase(self, intensity, geometry, *, boundary):  # one tile
        self._die_once()
        return super().phase(intensity, geometry, boundary=boundary)

    def field(self, intensity, geometry, *, interior=None):  # several tiles (the global path)
        self._die_once()
        return super().field(intensity, geometry, interior=interior)


@pytest.mark.slow
def test_killed_worker_is_replaced_and_the_phase_is_bit_identical(store, tmp_path):
    import dask
    from distributed import Client, LocalCluster

    ref = reconstruct(store, get_method("tie"), tile_size=8, halo=4, progress=False)
    with dask.config.set({"distributed.scheduler.allowed-failures": 3}), \
            LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as lc, \
            Client(lc) as client:
        res = reconstruct(store, KillOnce(tmp_path / "killed"), tile_size=8, halo=4, progress=False, client=client)
    assert (tmp_path / "killed").exists()  # a worker really died
    np.testing.assert_array_equal(res.phase, ref.phase)


@pytest.mark.slow
def test_a_tile_that_kills_every_worker_is_named_in_one_line(store, tmp_path):
    import dask
    from distributed import Client, LocalCluster

    from flowtie_dask.cluster import ClusterError

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), \
            LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as lc, \
            Client(lc) as client:
        with pytest.raises(ClusterError) as err:
            reconstruct(store, KillOnce(tmp_path / "k", always=True), tile_size=12, halo=2, progress=False,
                        client=client)
    msg = str(err.value)
    assert "\n" not in msg
    assert "died 2 times" in msg and "out of memory" in msg
    assert "scan position Rx=" in msg and "field-" in msg and "of the tile" in msg


def _wait_for_tiles(cache, n, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if os.path.isdir(cache) and sum(f.endswith(".npz") for f in os.listdir(cache)) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {n} tiles were done: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("timed out waiting for finished tiles")


@pytest.mark.slow
def test_sigkill_half_way_then_resume_is_bit_identical_and_skips_finished_tiles(store, tmp_path):
    from flowtie_dask.results import open_result

    common = ["reconstruct", store, "--tile-size", "6", "--halo", "4", "--no-progress"]  # 16 tiles
    clean = tmp_path / "clean.zarr"
    r = _cli(*common, "--out", clean)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "res.zarr"
    cache = str(tmp_path / ".res.zarr.resume")
    p = subprocess.Popen([sys.executable, "-m", "flowtie_dask.cli.main", *common, "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "CUPY_PYLOPS": "0"})
    _wait_for_tiles(cache, 4, p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not out.exists()
    kept = sorted(f for f in os.listdir(cache) if f.endswith(".npz"))
    assert 4 <= len(kept) < 16
    # without --resume the next run says what is there and does nothing
    r = _cli(*common, "--out", out)
    assert r.returncode == 2 and "--resume" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # other parameters: refused, naming the difference; the kept tiles survive
    r = _cli(*common[:5], "5", *common[6:], "--out", out, "--resume")
    assert r.returncode == 2 and "differs in: parameters.halo" in r.stderr
    assert sorted(f for f in os.listdir(cache) if f.endswith(".npz")) == kept
    # the same inputs: resumed
    r = _cli(*common, "--out", out, "--resume")
    assert r.returncode == 0, r.stderr
    assert f"resumed: {len(kept)} finished tiles loaded, {16 - len(kept)} computed" in r.stderr
    res, ref = open_result(str(out)), open_result(str(clean))
    np.testing.assert_array_equal(res.phase, ref.phase)
    assert res.attrs["tiles_reused"] == len(kept) and res.attrs["tiles_computed"] == 16 - len(kept)
    assert not os.path.exists(cache)  # cleaned up once the result is written


@pytest.mark.slow
def test_sigterm_exits_143_with_one_line_and_keeps_finished_tiles(store, tmp_path):
    out = tmp_path / "t.zarr"
    cache = str(tmp_path / ".t.zarr.resume")
    p = subprocess.Popen([sys.executable, "-m", "flowtie_dask.cli.main", "reconstruct", store, "--tile-size", "6",
                          "--halo", "4", "--no-progress", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "CUPY_PYLOPS": "0"})
    _wait_for_tiles(cache, 2, p)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "terminated (SIGTERM)" in lines[0] and "--resume" in lines[0]
    assert not out.exists() and not os.path.exists(str(tmp_path / ".t.zarr.lock"))
    assert not [n for n in os.listdir(tmp_path) if ".partial-" in n]
    assert sum(f.endswith(".npz") for f in os.listdir(cache)) >= 2


@pytest.mark.slow
def test_ctrl_c_on_a_local_cluster_prints_one_line_not_worker_tracebacks(store, tmp_path):
    """A terminal's Ctrl-C reaches the whole process group: workers included."""
    out = tmp_path / "c.zarr"
    p = subprocess.Popen([sys.executable, "-m", "flowtie_dask.cli.main", "reconstruct", store, "--tile-size", "6",
                          "--halo", "4", "--no-progress", "--workers", "2", "--dashboard", "127.0.0.1:0",
                          "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env={**os.environ, "CUPY_PYLOPS": "0"})
    _wait_for_tiles(str(tmp_path / ".c.zarr.resume"), 1, p)
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=90)
    assert p.returncode == 130, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("Dask dashboard:")]
    assert len(lines) == 1 and "interrupted" in lines[0], err
    assert not out.exists()


def test_a_damaged_kept_tile_is_recomputed_not_loaded(store, tmp_path):
    cache = tmp_path / "cache"
    ref = reconstruct(store, get_method("tie"), tile_size=12, halo=4, progress=False, cache=str(cache))
    kept = sorted(os.listdir(cache))
    assert len(kept) == 4 and ref.attrs["tiles_computed"] == 4
    with open(cache / kept[0], "r+b") as f:  # a partial cut short by a crash of the file system
        f.truncate(100)
    (cache / kept[1]).write_bytes(b"")
    again = reconstruct(store, get_method("tie"), tile_size=12, halo=4, progress=False, cache=str(cache))
    assert again.attrs["tiles_reused"] == 2 and again.attrs["tiles_computed"] == 2
    np.testing.assert_array_equal(again.phase, ref.phase)


@pytest.mark.slow
def test_flowtie_resume_with_kept_fields_is_bit_identical(tmp_path):
    """Global integration: the fields pass is resumed from kept fields, the projections recomputed."""
    store = tmp_path / "ft.zarr"
    r = _cli("simulate", "GaAs", "--lateral-cells", "2", "--scan-pixels", "48", "--detector-pixels", "16", "--gpts",
             "64", "--no-progress", "--out", store)
    assert r.returncode == 0, r.stderr
    common = ["reconstruct", store, "--method", "flowtie", "--tile-size", "24", "--no-progress", "--keep-fields"]
    clean = tmp_path / "clean.zarr"
    r = _cli(*common, "--out", clean)
    assert r.returncode == 0, r.stderr
    out, cache = tmp_path / "res.zarr", str(tmp_path / ".res.zarr.resume")
    p = subprocess.Popen([sys.executable, "-m", "flowtie_dask.cli.main", *map(str, common), "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "CUPY_PYLOPS": "0"})
    _wait_for_tiles(cache, 2, p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    kept = [f for f in os.listdir(cache) if f.startswith("field-")]
    assert 2 <= len(kept) <= 4
    r = _cli(*common, "--out", out, "--resume")
    assert r.returncode == 0, r.stderr
    from flowtie_dask.results import open_result

    res, ref = open_result(str(out)), open_result(str(clean))
    assert res.attrs["fields_reused"] == len(kept)
    np.testing.assert_array_equal(res.phase, ref.phase)

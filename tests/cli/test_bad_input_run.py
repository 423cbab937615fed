"""Bad-input catalogue, run side: inputs protected, outputs claimed, damaged values refused without a hang,
options checked. Each case: exit 2, one line naming the problem, the input unchanged, no output that looks
valid (:func:`tests.cli.catalogue.assert_refused`). Store-side cases are in ``test_bad_input_store.py``,
model/evaluate/train/export cases in ``test_bad_input_model.py``."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from flowtie_dask.cli.main import main
from tests.cli.catalogue import assert_refused

SMALL = ["--lateral-cells", "1", "--scan-pixels", "8", "--detector-pixels", "16", "--gpts", "24", "--no-progress",
         "--workers", "0"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    path = tmp_path_factory.mktemp("catalogue") / "g.zarr"
    assert main(["simulate", "GaAs", "--out", str(path), *SMALL]) == 0
    return path


def _spoiled(clean, tmp_path, name, fn):
    """A copy of the clean store whose intensity is changed by ``fn(array)`` (through zarr)."""
    import zarr

    path = tmp_path / name
    shutil.copytree(clean, path)
    arr = zarr.open_array(str(path / "intensity"), mode="r+")
    data = arr[:]
    fn(data)
    arr.with_config({"write_empty_chunks": True})[:] = data  # an all-zero scan is data, not missing chunks
    return path


def _run(store, out, *extra):
    return ["reconstruct", str(store), "--out", str(out), "--no-progress", "--workers", "0", *extra]


# ------------------------------------------------------------------------------------------ inputs protected
def test_out_equal_to_the_input_is_refused_even_with_overwrite(clean, tmp_path, capsys):
    assert_refused(_run(clean, clean, "--overwrite"), match=r"is the input", inputs=[clean], capsys=capsys)


def test_out_inside_the_input_is_refused(clean, tmp_path, capsys):
    assert_refused(_run(clean, clean / "res.zarr"), match=r"lies inside the input", inputs=[clean],
                   outputs=[clean / "res.zarr"], capsys=capsys)


def test_out_containing_the_input_is_refused(clean, tmp_path, capsys):
    assert_refused(_run(clean, clean.parent, "--overwrite"), match=r"contains the input", inputs=[clean],
                   capsys=capsys)


def test_out_through_a_symlink_to_the_input_is_refused(clean, tmp_path, capsys):
    link = tmp_path / "link.zarr"
    os.symlink(clean, link)
    assert_refused(_run(clean, link, "--overwrite"), match=r"is the input", inputs=[clean], capsys=capsys)


def test_simulate_over_its_structure_file_is_refused(tmp_path, capsys):
    from ase.build import bulk

    cif = tmp_path / "s.cif"
    bulk("Si", "diamond", a=5.43, cubic=True).write(str(cif))
    assert_refused(["simulate", str(cif), "--out", str(cif), "--overwrite", *SMALL], match=r"is the input",
                   inputs=[cif], capsys=capsys)


def test_export_into_its_input_is_refused(clean, tmp_path, capsys):
    assert_refused(["export", str(clean), "--out", str(clean / "x")], match=r"lies inside the input",
                   inputs=[clean], capsys=capsys)


def test_existing_output_needs_overwrite(clean, tmp_path, capsys):
    out = tmp_path / "r.zarr"
    assert main(_run(clean, out)) == 0
    assert_refused(_run(clean, out), match=r"already exists.*--overwrite", inputs=[clean], outputs=[out],
                   capsys=capsys)


# ---------------------------------------------------------------------------------------- claimed outputs
def test_a_live_writer_of_the_same_path_is_named(clean, tmp_path, capsys):
    out = tmp_path / "busy.zarr"
    lock = tmp_path / ".busy.zarr.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import psutil

        lock.mkdir()
        (lock / "owner.json").write_text(json.dumps({
            "pid": holder.pid, "host": os.uname().nodename, "started": psutil.Process(holder.pid).create_time(),
            "claimed": time.time()}))
        line = assert_refused(_run(clean, out), match=rf"being written by another run \(pid {holder.pid}",
                              inputs=[clean], capsys=capsys)
        assert "wait for it" in line
        assert lock.exists()  # the other run's claim is left alone
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_runs_leftovers_are_reported_and_removed_with_overwrite(clean, tmp_path, capsys):
    out = tmp_path / "stale.zarr"
    lock = tmp_path / ".stale.zarr.lock"
    partial = tmp_path / ".stale.zarr.partial-deadbeef.zarr"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.mkdir()
    (lock / "owner.json").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": 1.0,
                                                 "claimed": time.time()}))
    partial.mkdir()
    (partial / "junk").write_bytes(b"x" * 5000)
    line = assert_refused(_run(clean, out), match=r"a run that died \(pid \d+", inputs=[clean], capsys=capsys)
    assert "KiB" in line and "--overwrite" in line
    assert partial.exists()  # reported, not removed, without --overwrite
    assert main(_run(clean, out, "--overwrite")) == 0
    assert out.exists() and not partial.exists() and not lock.exists()


def test_two_simulate_runs_to_one_new_path_one_is_refused(tmp_path):
    out = tmp_path / "same.zarr"
    args = [sys.executable, "-m", "flowtie_dask.cli.main", "simulate", "GaAs", "--lateral-cells", "1", "--scan-pixels",
            "24", "--detector-pixels", "32", "--gpts", "48", "--no-progress", "--out", str(out)]
    env = {**os.environ, "CUPY_PYLOPS": "0"}
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes == [0, 2], results
    refused = [r for r in results if r[2] == 2][0]
    lines = refused[1].strip().splitlines()
    assert len(lines) == 1 and "being written by another run" in lines[0]
    from flowtie_dask.store import open_scan_store

    assert open_scan_store(out).intensity.shape[1:3] == (24, 24)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".same.zarr")]


# ----------------------------------------------------------------------- damaged values: refused, no hang
@pytest.mark.parametrize("name,spoil,match", [
    ("nan", lambda a: a.__setitem__((1, 2, 3, 4, 5), np.nan), r"non-finite intensity .*Rx=2, Ry=3.*defocus index 1"),
    ("inf", lambda a: a.__setitem__((0, 7, 0, 8, 8), np.inf), r"non-finite intensity .*Rx=7, Ry=0"),
    ("zero", lambda a: a.__setitem__(Ellipsis, 0), r"no signal in defocus index 0"),
    ("negative", lambda a: a.__setitem__(Ellipsis, -np.abs(a) - 1e-3), r"negative intensity"),
    ("blank", lambda a: a.__setitem__((2, slice(0, 4)), 0), r"32 of 64 patterns of defocus index 2 have no signal"),
])
def test_damaged_values_are_refused_in_one_line_without_a_hang(clean, tmp_path, name, spoil, match):
    store = _spoiled(clean, tmp_path, f"{name}.zarr", spoil)
    out = tmp_path / f"{name}_r.zarr"
    t0 = time.perf_counter()
    assert_refused(_run(store, out), match=match, inputs=[store], outputs=[out], subprocess=True, timeout=120)
    assert time.perf_counter() - t0 < 120


def test_a_store_whose_chunks_are_all_gone_is_refused(clean, tmp_path, capsys):
    store = tmp_path / "gone.zarr"
    shutil.copytree(clean, store)
    shutil.rmtree(store / "intensity" / "c")
    out = tmp_path / "gone_r.zarr"
    assert_refused(_run(store, out), match=r"is incomplete: chunk intensity/c/0/0/0/0/0 .* 3 of 3 intensity chunks missing",
                   inputs=[store], outputs=[out], capsys=capsys)


def test_gradient_descent_on_nan_data_names_the_data_not_the_step(clean, tmp_path, capsys):
    store = _spoiled(clean, tmp_path, "gdnan.zarr", lambda a: a.__setitem__((1, 1, 1, 1, 1), np.nan))  # GD fits focus
    out = tmp_path / "gd.zarr"
    line = assert_refused(_run(store, out, "--method", "gd", "--iterations", "3"), match=r"non-finite intensity",
                          inputs=[store], outputs=[out], capsys=capsys)
    assert "lower lr" not in line


def test_a_non_finite_phase_never_reaches_the_unwrapper():
    from flowtie_dask.projection import unwrap

    phase = np.random.default_rng(0).uniform(-3, 3, (32, 32))
    phase[5, 5] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        unwrap(phase, periodic=True)
    masked = np.zeros((32, 32), bool)
    masked[5, 5] = True
    out = unwrap(phase, periodic=False, mask=masked)  # NaN only where masked: unwrapped, finite
    assert np.isfinite(out).all()


def test_a_stalled_library_call_ends_with_a_message():
    from flowtie_dask.projection import run_with_time_budget

    t0 = time.perf_counter()
    with pytest.raises(TimeoutError, match="did not finish in 0.3 s"):
        run_with_time_budget(time.sleep, 30, seconds=0.3, what="a test call")
    assert time.perf_counter() - t0 < 5
    assert run_with_time_budget(sum, [1, 2], seconds=5, what="sum") == 3


# -------------------------------------------------------------------------------------------- options
@pytest.mark.parametrize("extra,match", [
    (["--tile-size", "3", "5", "7"], r"--tile-size takes one or two values"),
    (["--model", "m.pt"], r"method 'tie' takes no option 'model' \(--model\); its options: consistency, eps"),
    (["--halo", "100000"], r"--halo 100000 is larger than the scan \(8×8 positions\)"),
    (["--halo", "-1"], r"argument --halo: -1 must be ≥ 0"),
    (["--dashboard", "notaport"], r"argument --dashboard: --dashboard 'notaport' is not HOST:PORT"),
    (["--method", "gd", "--resume"], r"--resume continues tiled methods"),
    (["--symmetry", "d4"], r"method 'tie' takes no option 'symmetry' \(--symmetry\)"),
    (["--method", "icom", "--iterations", "5"], r"method 'icom' takes no option 'iterations' \(--iterations\)"),
    (["--method", "icom", "--keep-fields"], r"--keep-fields keeps predicted gradient fields"),
    (["--scratch", "/nonexistent/flowtie-scratch"], r"--scratch /nonexistent/flowtie-scratch: not a folder this user "
                                                    r"can write to"),
])
def test_bad_reconstruct_options(clean, tmp_path, capsys, extra, match):
    out = tmp_path / "o.zarr"
    assert_refused(_run(clean, out, *extra), match=match, inputs=[clean], outputs=[out], capsys=capsys)


def test_simulate_resume_without_count_is_refused(tmp_path, capsys):
    out = tmp_path / "s.zarr"
    assert_refused(["simulate", "GaAs", "--out", str(out), "--resume", *SMALL], match=r"--resume continues a collection",
                   outputs=[out], capsys=capsys)


def test_gpus_0_is_the_default_and_accepted(clean, tmp_path, capsys):
    out = tmp_path / "g0.zarr"
    assert main(_run(clean, out, "--gpus", "0")) == 0
    assert out.exists()


def test_dashboard_link_names_the_interface_it_listens_on():
    from flowtie_dask.cluster import _dashboard_link

    assert _dashboard_link("http://10.1.2.3:8787/status", "127.0.0.1:8787") == "http://127.0.0.1:8787/status"
    assert _dashboard_link("http://10.1.2.3:41234/status", "127.0.0.1:0") == "http://127.0.0.1:41234/status"
    assert _dashboard_link("http://10.1.2.3:8787/status", "0.0.0.0:8787") == "http://10.1.2.3:8787/status"


def test_a_malformed_scheduler_file_is_named(clean, tmp_path, capsys):
    f = tmp_path / "sched.json"
    f.write_text("{not json")
    out = tmp_path / "s.zarr"
    assert_refused([*_run(clean, out)[:-2], "--scheduler-file", str(f)], match=r"scheduler file .*sched.json.* is "
                   r"not valid JSON \(line 1 column 2\)", inputs=[clean, f], outputs=[out], capsys=capsys)
    f.write_text('{"id": 3}')
    assert_refused([*_run(clean, out)[:-2], "--scheduler-file", str(f)], match=r"has no scheduler 'address'",
                   inputs=[clean, f], outputs=[out], capsys=capsys)


def test_a_full_disk_says_so(clean, tmp_path, capsys, monkeypatch):
    import errno as _errno

    import flowtie_dask.results as results

    def full(*a, **k):
        raise OSError(_errno.ENOSPC, "No space left on device", str(tmp_path / "f.zarr" / "phase"))

    monkeypatch.setattr(results, "save_preview", full)
    out = tmp_path / "f.zarr"
    assert_refused(_run(clean, out), match=r"the disk is full writing .*nothing was published", inputs=[clean],
                   outputs=[out], capsys=capsys)


def test_evaluate_figure_over_an_input_is_refused(clean, tmp_path, capsys):
    res = tmp_path / "r.zarr"
    assert main(_run(clean, res)) == 0
    assert_refused(["evaluate", str(res), "--truth", str(clean), "--figure", str(clean), "--overwrite"],
                   match=r"--figure .* is the input", inputs=[clean, res], capsys=capsys)
    assert_refused(["evaluate", str(res), "--truth", str(clean), "--figure", str(res / "p.png")],
                   match=r"--figure .* lies inside the input", inputs=[clean, res], capsys=capsys)


def test_device_gpu_without_a_gpu_here_is_refused(clean, tmp_path, capsys):
    from flowtie_dask.backend import cupy_available

    if cupy_available():
        pytest.skip("a GPU is usable here")
    out = tmp_path / "r.zarr"
    assert_refused(_run(clean, out, "--device", "gpu"), match=r"--device gpu: no CuPy", inputs=[clean],
                   outputs=[out], capsys=capsys)


def test_integration_global_for_a_method_without_a_field_is_refused(clean, tmp_path, capsys):
    out = tmp_path / "r.zarr"
    assert_refused(_run(clean, out, "--method", "icom", "--integration", "global", "--tile-size", "4"),
                   match=r"integration='global' needs a field method", inputs=[clean], outputs=[out], capsys=capsys)


def test_integration_tile_and_global_both_run_and_differ_for_tie(clean, tmp_path):
    from flowtie_dask.results import open_result

    outs = {}
    for mode in ("tile", "global"):
        outs[mode] = tmp_path / f"{mode}.zarr"
        assert main(_run(clean, outs[mode], "--tile-size", "4", "--integration", mode)) == 0
    a, b = open_result(str(outs["tile"])), open_result(str(outs["global"]))
    assert a.attrs["integration"] == "tile" and b.attrs["integration"] == "global"
    assert not np.allclose(a.phase, b.phase)

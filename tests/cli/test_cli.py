import subprocess
import sys

import numpy as np
import pytest

from flowtie_dask.cli.main import build_parser, main
from flowtie_dask.store import open_scan_store

SMALL = ["--lateral-cells", "1", "--scan-pixels", "6", "--detector-pixels", "16", "--gpts", "24", "--no-progress",
         "--workers", "0"]


def _help(capsys, *cmd):
    with pytest.raises(SystemExit) as exit_:
        main([*cmd, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_reconstruct_help_lists_every_method_option(capsys):
    """Every registered method's options appear in ``reconstruct --help`` (a help text with a per-cent sign in
    it once broke argparse's formatting of the whole page)."""
    from flowtie_dask.methods import all_options

    text = _help(capsys, "reconstruct")
    for name in all_options():
        assert "--" + name.replace("_", "-") in text, name
    flat = " ".join(text.split())  # argparse wraps lines
    assert "within 4 % of the full form" in flat and "--consistency N" in flat


def test_simulate_help_names_every_option(capsys):
    text = _help(capsys, "simulate")
    for opt in ["--out", "--lateral-cells", "--thickness-cells", "--thickness", "--energy", "--semiangle",
                "--defocus-step", "--detector-pixels", "--scan-pixels", "--slice-thickness", "--dose", "--seed",
                "--workers", "--threads", "--gpus", "--scheduler", "--scheduler-file", "--probe-frame",
                "--frozen-phonons", "--overwrite", "random-cubic"]:
        assert opt in text, opt
    assert "positive = underfocus" in text


def test_info_help(capsys):
    assert "PATH" in _help(capsys, "info")


def test_every_option_has_help_text():
    parser = build_parser()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_simulate_then_info(tmp_path, capsys):
    out = tmp_path / "g.zarr"
    assert main(["simulate", "GaAs", "--out", str(out), "--thickness", "4.0", "--dose", "1e4", *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "scan store" in printed
    store = open_scan_store(out)
    assert store.intensity.shape == (3, 6, 6, 16, 16)
    assert store.metadata.provenance["thickness_A"] == 4.0
    assert store.metadata.provenance["dose_e_per_A2"] == 1e4
    assert np.all(store.intensity[:] >= 0)
    assert main(["info", str(out)]) == 0
    assert "(3, 6, 6, 16, 16)" in capsys.readouterr().out


def test_random_cubic_with_probe_frame(tmp_path):
    out = tmp_path / "r.zarr"
    assert main(["simulate", "random-cubic", "--seed", "5", "--probe-frame", "--out", str(out), *SMALL]) == 0
    store = open_scan_store(out)
    assert store.truth["probe_frame_phase"].shape == (6, 6, 16, 16)
    assert store.metadata.provenance["material"] != "GaAs"


@pytest.mark.parametrize(
    "args,message",
    [
        (["simulate", "Kryptonite", "--out", "{tmp}/k.zarr"], "unknown material 'Kryptonite'"),
        (["simulate", "GaAs", "--out", "{tmp}/g.zarr", "--detector-pixels", "32", "--gpts", "16"], "simulation grid"),
        (["simulate", "GaAs", "--out", "{tmp}/missing/g.zarr"], "does not exist"),
        (["info", "{tmp}/nothing.zarr"], "does not exist"),
        (["simulate", "GaAs", "--out", "{tmp}/g.zarr", "--scheduler-file", "{tmp}/none.json"], "does not exist"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(tmp_path, capsys, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    if args[0] == "simulate":
        args += ["--no-progress", "--lateral-cells", "1", "--scan-pixels", "4"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("flowtie-dask ")
    assert not any(p.name.endswith(".zarr") for p in tmp_path.iterdir())


def test_argparse_rejects_nonpositive_numbers(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "GaAs", "--out", "x.zarr", "--energy", "-3"])
    assert exit_.value.code == 2
    assert "must be > 0" in capsys.readouterr().err


def test_existing_output_is_not_replaced(tmp_path, capsys):
    out = tmp_path / "g.zarr"
    assert main(["simulate", "GaAs", "--out", str(out), *SMALL]) == 0
    before = open_scan_store(out).intensity[:]
    assert main(["simulate", "GaAs", "--out", str(out), "--energy", "200000", *SMALL]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    np.testing.assert_array_equal(open_scan_store(out).intensity[:], before)


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "flowtie_dask.cli.main", "info", "/nonexistent.zarr"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_reconstruct_and_evaluate(tmp_path, capsys):
    store, result = tmp_path / "g.zarr", tmp_path / "r.zarr"
    assert main(["simulate", "GaAs", "--out", str(store), *SMALL, "--scan-pixels", "16", "--gpts", "32"]) == 0
    assert main(["reconstruct", str(store), "--out", str(result), "--no-progress", "--workers", "0",
                 "--tile-size", "8", "--halo", "4"]) == 0
    assert "wrote" in capsys.readouterr().out
    fig = tmp_path / "panel.png"
    assert main(["evaluate", str(result), "--truth", str(store), "--figure", str(fig)]) == 0
    out = capsys.readouterr().out
    line = [l for l in out.splitlines() if l.startswith(str(result))][0]
    mse, var = (float(v) for v in line.split()[2:4])
    assert 0 < mse < var
    assert fig.stat().st_size > 1000
    # an existing result is refused before any work
    assert main(["reconstruct", str(store), "--out", str(result), "--no-progress", "--workers", "0"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    # evaluating against a store without truth names the problem
    assert main(["evaluate", str(result), "--truth", str(result)]) == 2


def test_reconstruct_with_gradient_descent(tmp_path, capsys):
    store, result = tmp_path / "g.zarr", tmp_path / "gd.zarr"
    assert main(["simulate", "GaAs", "--out", str(store), *SMALL, "--scan-pixels", "16", "--gpts", "32"]) == 0
    assert main(["reconstruct", str(store), "--method", "gd", "--iterations", "20", "--out", str(result),
                 "--no-progress"]) == 0
    from flowtie_dask.results import open_result

    res = open_result(str(result))
    assert res.attrs["method"] == "gd" and res.attrs["iterations"] == 20
    assert res.attrs["final_loss"] < res.attrs["initial_loss"]
    # a warm start from a TIE result of the same scan begins below the flat start
    tie, warm = tmp_path / "tie.zarr", tmp_path / "warm.zarr"
    assert main(["reconstruct", str(store), "--out", str(tie), "--no-progress"]) == 0
    assert main(["reconstruct", str(store), "--method", "gd", "--iterations", "5", "--initial", str(tie),
                 "--out", str(warm), "--no-progress"]) == 0
    w = open_result(str(warm))
    assert w.attrs["initial"] == "given" and w.attrs["initial_loss"] < res.attrs["initial_loss"]
    assert main(["reconstruct", str(store), "--initial", str(tie), "--out", str(tmp_path / "x.zarr"),
                 "--no-progress"]) == 2
    assert "method 'tie' takes no option 'initial' (--initial)" in capsys.readouterr().err
    assert not (tmp_path / "x.zarr").exists()
    assert main(["reconstruct", str(store), "--symmetry", "d4", "--out", str(tmp_path / "x.zarr"),
                 "--no-progress"]) == 2
    assert "method 'tie' takes no option 'symmetry' (--symmetry)" in capsys.readouterr().err
    assert not (tmp_path / "x.zarr").exists()

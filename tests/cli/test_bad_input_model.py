"""Bad input to the model-side commands (reconstruct --method flowtie, train, evaluate, export): exit 2, one line
naming the file and the fix, inputs unchanged, no output (the harness in tests/cli/catalogue.py)."""

import json
import os
import re

import numpy as np
import pytest
import torch
import zarr

from flowtie_dask.cli.main import main
from flowtie_dask.geometry import ReconstructionGeometry
from flowtie_dask.model import checkpoint
from flowtie_dask.model.architectures import SharedFlowModel
from flowtie_dask.model.checkpoint import optics_record, save_checkpoint
from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store
from flowtie_dask.store import open_scan_store
from tests.cli.catalogue import assert_refused, tree_checksum

SMALL = dict(material="GaAs", scan_pixels=6, detector_pixels=16, gpts=24)
RUN = ["--no-progress", "--workers", "0", "--halo", "4"]
TRAIN = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "1", "--tile", "4", "--n-q", "16",
         "--hidden", "4", "--depth", "2", "--no-progress"]

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("model_cli")


@pytest.fixture(scope="module")
def store(root):
    """A tiny periodic GaAs scan with probe-frame truth (trainable, reconstructable, evaluable)."""
    return simulate_to_store(SimulationParameters(lateral_cells=1, probe_frame=True, **SMALL), str(root / "one.zarr"),
                             progress=False)


@pytest.fixture(scope="module")
def wide(root):
    """The same optics and scan step over a 2×2 supercell."""
    return simulate_to_store(SimulationParameters(lateral_cells=2, **{**SMALL, "scan_pixels": 12}),
                             str(root / "two.zarr"), progress=False)


@pytest.fixture(scope="module")
def model(root, store):
    """A small checkpoint whose optics record fits ``store``."""
    st = open_scan_store(store)
    geo = ReconstructionGeometry.from_metadata(st.metadata, scan_shape=st.scan_shape, detector_shape=st.detector_shape)
    torch.manual_seed(0)
    return save_checkpoint(str(root / "good.pt"), model=SharedFlowModel(hidden=4, depth=2),
                           meta={"optics": optics_record(geo)})


@pytest.fixture(scope="module")
def result(root, store):
    out = root / "tie.zarr"
    assert main(["reconstruct", store, "--out", str(out), *RUN]) == 0
    return str(out)


def variant(src, dst, edit):
    payload = torch.load(src, weights_only=True)
    meta = json.loads(payload["meta_json"])
    edit(payload, meta)
    payload["meta_json"] = json.dumps(meta)
    torch.save(payload, dst)
    return str(dst)


def _nan(payload, meta):
    payload["state_dict"]["head.weight"][0, 0, 1, 1] = float("nan")


# ------------------------------------------------------------------------------ reconstruct --method flowtie


def test_the_good_checkpoint_reconstructs(tmp_path, store, model):
    """The control: the checkpoint every case below spoils is accepted as it is."""
    out = tmp_path / "ok.zarr"
    assert main(["reconstruct", store, "--method", "flowtie", "--model", model, "--out", str(out), *RUN]) == 0
    assert zarr.open_group(str(out), mode="r")["phase"].shape[0] > 0


@pytest.mark.parametrize("name,edit,match", [
    ("no_optics", lambda p, m: m.pop("optics"),
     r"no_optics.pt' has no optics record; it cannot be checked against the scan: retrain or re-save it with "
     r"'flowtie-dask train'$"),
    ("empty_optics", lambda p, m: m.update(optics={}), r"empty_optics.pt' has no optics record"),
    ("unknown_arg", lambda p, m: m["architecture"].update(dropout=0.1),
     r"unknown_arg.pt': unknown SharedFlowModel argument 'dropout' \(known: hidden, kernel_size, depth, mixing, "
     r"padding_mode\)"),
    ("huge_hidden", lambda p, m: m["architecture"].update(hidden=4_000_000),
     r"huge_hidden.pt': SharedFlowModel argument hidden = 4000000 is outside 1…1024"),
    ("huge_model", lambda p, m: m["architecture"].update(hidden=1000, depth=60),
     r"huge_model.pt': its architecture \(SharedFlowModel with hidden=1000, .*depth=60.*\) would have 5.24e\+08 "
     r"parameters, more than the 1e\+08"),
    ("wrong_shape", lambda p, m: m["architecture"].update(hidden=8),
     r"wrong_shape.pt': the weights do not fit its architecture record \(SharedFlowModel\): weight 'stem.weight' "
     r"has shape \(4, 6, 3, 3\), the architecture needs \(8, 6, 3, 3\)"),
    ("nan_weights", _nan,
     r"nan_weights.pt': weight 'head.weight' has 1 non-finite value \(NaN or Inf\) of 72"),
])
def test_a_spoiled_checkpoint_is_refused(tmp_path, capsys, store, model, name, edit, match):
    path = variant(model, tmp_path / f"{name}.pt", edit)
    out = tmp_path / "r.zarr"
    assert_refused(["reconstruct", store, "--method", "flowtie", "--model", path, "--out", out, *RUN],
                   match=r"^flowtie-dask reconstruct: error: .*" + match, inputs=[store, path], outputs=[out],
                   capsys=capsys)


def test_random_bytes_as_model_are_not_a_torch_file(tmp_path, capsys, store):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(3).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    out = tmp_path / "r.zarr"
    line = assert_refused(["reconstruct", store, "--method", "flowtie", "--model", junk, "--out", out, *RUN],
                          match=r"junk.pt' is not a flowtie-dask checkpoint \(could not be read as a torch file\)",
                          inputs=[store, junk], outputs=[out], capsys=capsys)
    assert "pickled code" not in line


def test_a_checkpoint_that_needs_pickled_code_is_named_so(tmp_path, capsys, store):
    class Code:
        def __reduce__(self):
            return (os.getcwd, ())

    evil = tmp_path / "evil.pt"
    torch.save({"meta_json": "{}", "state_dict": {}, "x": Code()}, evil)
    out = tmp_path / "r.zarr"
    assert_refused(["reconstruct", store, "--method", "flowtie", "--model", evil, "--out", out, *RUN],
                   match=r"evil.pt' needs pickled code to load and was refused \(weights_only=True\)",
                   inputs=[store, evil], outputs=[out], capsys=capsys)


# ------------------------------------------------------------------------------------------------ train


def test_train_refuses_an_existing_out_unless_overwrite_or_resume(tmp_path, capsys, store):
    out = tmp_path / "m.pt"
    out.write_bytes(b"an earlier model")
    assert_refused(["train", store, "--out", out, *TRAIN],
                   match=r"^flowtie-dask train: error: '.*m.pt' already exists; pass --resume to continue it, "
                         r"--overwrite to replace it, or choose another --out$",
                   inputs=[store, out], capsys=capsys)
    assert_refused(["train", store, "--out", tmp_path / "none.pt", "--resume", *TRAIN],
                   match=r"--resume continues the checkpoint '.*none.pt', which does not exist",
                   inputs=[store], outputs=[tmp_path / "none.pt"], capsys=capsys)
    # the control: --overwrite trains and replaces it
    assert main(["train", store, "--out", str(out), "--overwrite", *TRAIN]) == 0
    assert out.read_bytes() != b"an earlier model"
    assert checkpoint.load_checkpoint(str(out))[1]["epoch"] == 1


def test_train_with_a_non_finite_loss_stops_naming_the_step(tmp_path, capsys, store):
    out = tmp_path / "m.pt"
    assert_refused(["train", store, "--out", out, "--lr", "1e30", *TRAIN],
                   match=r"^flowtie-dask train: error: the training loss became (nan|inf) at epoch 1, step 2 of 2 "
                         r"\(lr 1e\+30\): lower --lr, or check the data and the loss weights for non-finite values; "
                         r"no checkpoint was written$",
                   inputs=[store], outputs=[out], capsys=capsys)
    assert_refused(["train", store, "--out", out, "--gamma", "nan", *TRAIN],
                   match=r"argument --gamma: nan must be a finite number ≥ 0", inputs=[store], outputs=[out],
                   capsys=capsys)


def test_train_on_a_full_disk_says_so_naming_the_checkpoint(tmp_path, capsys, store, monkeypatch):
    """Not a refusal before work (an epoch ran and logged its line), so checked by hand: exit 2, the error is
    one line, and no checkpoint or partial file is left."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux) for a real ENOSPC")
    monkeypatch.setattr(checkpoint, "_open_for_writing", lambda tmp: open("/dev/full", "wb"))
    out = tmp_path / "m.pt"
    before = tree_checksum(store)
    capsys.readouterr()
    assert main(["train", store, "--out", str(out), *TRAIN]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("epoch 1: train ")  # the epoch's log line, then the one error line
    assert len(lines) == 2 and re.fullmatch(
        r"flowtie-dask train: error: the disk is full: the checkpoint '.*m.pt' \(\d+(\.\d)? [KM]iB\) could not be written "
        r"\(an earlier one there is unchanged\); free space or choose another --out", lines[1]), lines
    assert not out.exists() and os.listdir(tmp_path) == []
    assert tree_checksum(store) == before


def test_train_on_a_collection_with_malformed_json_names_the_file(tmp_path, capsys, store):
    coll = tmp_path / "coll"
    coll.mkdir()
    (coll / "collection.json").write_text('{"schema": "flowtie-dask/collection",\n "members": [,]}')
    out = tmp_path / "m.pt"
    assert_refused(["train", coll, "--out", out, *TRAIN],
                   match=r"'.*coll/collection.json' is not valid JSON \(line 2 column 14\): Expecting value",
                   inputs=[coll], outputs=[out], capsys=capsys)


# --------------------------------------------------------------------------------------------- evaluate


def test_evaluate_refuses_an_existing_figure_unless_overwrite(tmp_path, capsys, store, result):
    fig = tmp_path / "panel.png"
    fig.write_bytes(b"someone's figure")
    assert_refused(["evaluate", result, "--truth", store, "--figure", fig],
                   match=r"^flowtie-dask evaluate: error: '.*panel.png' already exists; choose another --figure or "
                         r"pass --overwrite$",
                   inputs=[store, result, fig], capsys=capsys)
    # the default, evaluation.png beside the first result, is protected alike
    default = os.path.join(os.path.dirname(result), "evaluation.png")
    with open(default, "wb") as f:
        f.write(b"an earlier panel")
    try:
        assert_refused(["evaluate", result, "--truth", store], match=r"evaluation.png' already exists",
                       inputs=[store, result, default], capsys=capsys)
    finally:
        os.remove(default)
    # the control: --overwrite replaces it with a panel
    assert main(["evaluate", result, "--truth", store, "--figure", str(fig), "--overwrite"]) == 0
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_refuses_a_truth_of_another_field_of_view(tmp_path, capsys, store, wide, result):
    fig = tmp_path / "panel.png"
    assert_refused(["evaluate", result, "--truth", wide, "--figure", fig],
                   match=r"^flowtie-dask evaluate: error: .*tie.zarr: '.*two.zarr' is not the truth of this result: "
                         r"the truth covers 11.3 × 11.3 Å, the result 5.7 × 5.7 Å: give the store the result was "
                         r"reconstructed from \(its source is '.*one.zarr'\)$",
                   inputs=[store, wide, result], outputs=[fig], capsys=capsys)
    # its own truth is accepted
    assert main(["evaluate", result, "--truth", store, "--figure", str(fig)]) == 0
    assert fig.exists()


# ----------------------------------------------------------------------------------------------- export


def test_export_of_a_result_with_nan_is_refused(tmp_path, capsys, result):
    pytest.importorskip("py4DSTEM")
    import shutil

    bad = tmp_path / "bad.zarr"
    shutil.copytree(result, bad)
    phase = zarr.open_group(str(bad), mode="r+")["phase"]
    phase[1, 2] = np.nan
    phase[3, 3] = np.inf
    out = tmp_path / "bad.h5"
    assert_refused(["export", bad, "--out", out],
                   match=r"^flowtie-dask export: error: '.*bad.zarr' contains 2 non-finite values \(NaN or Inf\) in "
                         r"its phase \(the first at pixel \(1, 2\)\): fix or re-run the reconstruction; nothing was "
                         r"exported$",
                   inputs=[bad], outputs=[out], capsys=capsys)
    assert main(["export", result, "--out", str(tmp_path / "good.h5")]) == 0  # the control


def test_export_of_a_store_with_nan_is_refused(tmp_path, capsys, store):
    pytest.importorskip("py4DSTEM")
    import shutil

    bad = tmp_path / "bad.zarr"
    shutil.copytree(store, bad)
    zarr.open_group(str(bad), mode="r+")["intensity"][2, 4, 5, 0, 0] = np.nan
    outs = [tmp_path / f"cube_defocus_{i}.h5" for i in range(3)]
    assert_refused(["export", bad, "--out", tmp_path / "cube"],
                   match=r"^flowtie-dask export: error: .*non-finite.*defocus 2, scan position \(4, 5\)",
                   inputs=[bad], outputs=outs, capsys=capsys)
    assert main(["export", store, "--out", str(tmp_path / "cube")]) == 0  # the control
    assert all(o.exists() for o in outs)


def test_export_of_a_result_with_malformed_metadata_names_the_file_and_place(tmp_path, capsys, result):
    import shutil

    bad = tmp_path / "bad.zarr"
    shutil.copytree(result, bad)
    (bad / "zarr.json").write_text('{"zarr_format": 3,\n "node_type": "group", }')
    out = tmp_path / "bad.h5"
    assert_refused(["export", bad, "--out", out],
                   match=r"^flowtie-dask export: error: '.*bad.zarr/zarr.json' is not valid JSON \(line 2 column 24\): "
                         r"Expecting property name enclosed in double quotes; the group is damaged",
                   inputs=[bad], outputs=[out], capsys=capsys)

"""Checkpoints that are damaged, hostile or incomplete are refused with one line, before anything big is
built; training stops on a non-finite loss and on a full disk with one line."""

import errno
import functools
import json
import os

import numpy as np
import pytest
import torch

from flowtie_dask.geometry import ReconstructionGeometry
from flowtie_dask.model import checkpoint
from flowtie_dask.model.architectures import FlowPredictorModel, SharedFlowModel
from flowtie_dask.model.checkpoint import (
    MAX_PARAMETERS,
    CheckpointError,
    check_architecture,
    check_compatible,
    load_checkpoint,
    optics_record,
    save_checkpoint,
)
from flowtie_dask.model.inference import FlowTIEPhase

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def geometry():
    return ReconstructionGeometry(energy=300e3, semiangle=20.0, aperture_edge=0.0, focus_c10=0.0, aberrations={},
                                  scan_shape=(6, 6), scan_step=(0.2, 0.2), detector_shape=(16, 16),
                                  detector_sampling=(0.1, 0.1), detector_center=(8, 8), periodic=True,
                                  c10=(20.0, 0.0, -20.0))


@pytest.fixture
def good(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(str(tmp_path / "good.pt"), model=SharedFlowModel(hidden=4, depth=2),
                           meta={"optics": optics_record(geometry())})


def variant(src, dst, edit):
    """Copy of checkpoint ``src`` with ``edit(payload, meta)`` applied, written with torch.save."""
    payload = torch.load(src, weights_only=True)
    meta = json.loads(payload["meta_json"])
    edit(payload, meta)
    payload["meta_json"] = json.dumps(meta)
    torch.save(payload, dst)
    return str(dst)


def test_a_good_checkpoint_loads_and_checks(good):
    model, meta, _ = load_checkpoint(good)
    assert isinstance(model, SharedFlowModel) and model.hidden == 4
    FlowTIEPhase(good).check(geometry())  # its own optics fit


@pytest.mark.parametrize("edit", [
    lambda p, m: m.pop("optics"),
    lambda p, m: m.update(optics={}),
    lambda p, m: m.update(optics=None),
])
def test_a_checkpoint_without_optics_is_refused_for_reconstruction(good, tmp_path, edit):
    path = variant(good, tmp_path / "no_optics.pt", edit)
    method = FlowTIEPhase(path)  # it loads (training could still use it) …
    with pytest.raises(CheckpointError, match=r"no_optics.pt' has no optics record; it cannot be checked against "
                                              r"the scan: retrain or re-save it with 'flowtie-dask train'"):
        method.check(geometry())  # … but it is not used on a scan
    with pytest.raises(CheckpointError, match="has no optics record"):
        check_compatible({}, geometry())


def test_an_incomplete_or_malformed_optics_record_is_refused(good, tmp_path):
    record = optics_record(geometry())
    partial = {k: v for k, v in record.items() if k != "energy_eV"}
    with pytest.raises(CheckpointError, match="optics record lacks energy_eV"):
        check_compatible(partial, geometry())
    with pytest.raises(CheckpointError, match=r"scan_step_A = 'wide' is not \[min, max\]"):
        check_compatible({**record, "scan_step_A": "wide"}, geometry())
    with pytest.raises(CheckpointError, match="energy_eV = nan is not a positive number"):
        check_compatible({**record, "energy_eV": float("nan")}, geometry())
    check_compatible(record, geometry())  # the complete record passes


@pytest.mark.parametrize("change,message", [
    ({"name": "TransformerModel"}, r"unknown architecture 'TransformerModel' \(known: DimensionlessFlowModel, "
                                   r"DoseAwareFlowModel, FlowPredictorModel, "
                                   r"SharedFlowModel\)"),
    ({"dropout": 0.1}, r"unknown SharedFlowModel argument 'dropout' \(known: hidden, kernel_size, depth, mixing, "
                       r"padding_mode\)"),
    ({"hidden": "32"}, r"argument hidden = '32' is not an integer"),
    ({"hidden": 4.0}, r"argument hidden = 4.0 is not an integer"),
    ({"mixing": "yes"}, r"argument mixing = 'yes' is not true/false"),
    ({"padding_mode": "mirror"}, r"padding_mode = 'mirror' is not one of reflect"),
    ({"kernel_size": 4}, r"kernel_size = 4 is not odd"),
    ({"depth": 1}, r"depth = 1 is below 2"),
    ({"hidden": 0}, r"hidden = 0 is outside 1…1024"),
    ({"hidden": 200_000}, r"hidden = 200000 is outside 1…1024"),
    ({"depth": 10**6}, r"depth = 1000000 is outside 1…64"),
    ({"hidden": 1024, "depth": 64}, r"would have 5.87e\+08 parameters, more than the 1e\+08"),
])
def test_bad_architecture_records_are_refused_before_any_model_is_built(good, tmp_path, monkeypatch, change, message):
    built = []
    real_init = SharedFlowModel.__init__

    @functools.wraps(real_init)
    def watched(self, *a, **k):
        built.append(k)
        real_init(self, *a, **k)

    monkeypatch.setattr(SharedFlowModel, "__init__", watched)
    path = variant(good, tmp_path / "arch.pt", lambda p, m: m["architecture"].update(change))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
    assert built == []  # refused from the record alone
    load_checkpoint(good)
    assert len(built) == 2  # the check can see a construction: the good one builds (shapes on 'meta', then real)


def test_the_parameter_bound_follows_the_architecture_formula():
    # a paper model for a 256×256 detector is over the bound, one for a 64×64 detector within it
    assert FlowPredictorModel.count_parameters(256 * 256) > MAX_PARAMETERS > FlowPredictorModel.count_parameters(4096)
    with pytest.raises(CheckpointError, match=r"would have 2.27e\+08 parameters, more than"):
        check_architecture({"name": "FlowPredictorModel", "n_pixels": 256 * 256})
    cls, kwargs = check_architecture({"name": "FlowPredictorModel", "n_pixels": 64 * 64})
    assert cls is FlowPredictorModel and kwargs == {"n_pixels": 4096}
    with pytest.raises(CheckpointError, match="the FlowPredictorModel record lacks n_pixels"):
        check_architecture({"name": "FlowPredictorModel", "hidden": 8})
    with pytest.raises(CheckpointError, match="has no architecture record"):
        check_architecture(None)


def test_weights_that_do_not_fit_the_architecture_are_refused_in_one_line(good, tmp_path):
    wider = variant(good, tmp_path / "wider.pt", lambda p, m: m["architecture"].update(hidden=5))
    with pytest.raises(CheckpointError, match=r"weights do not fit its architecture record \(SharedFlowModel\): "
                                              r"weight 'stem.weight' has shape \(4, 6, 3, 3\), the architecture "
                                              r"needs \(5, 6, 3, 3\)") as info:
        load_checkpoint(wider)
    assert "\n" not in str(info.value)
    missing = variant(good, tmp_path / "missing.pt", lambda p, m: p["state_dict"].pop("head.bias"))
    with pytest.raises(CheckpointError, match="weight 'head.bias' is missing"):
        load_checkpoint(missing)
    extra = variant(good, tmp_path / "extra.pt", lambda p, m: p["state_dict"].update(extra=torch.zeros(2)))
    with pytest.raises(CheckpointError, match="weight 'extra' is not part of the model"):
        load_checkpoint(extra)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_naming_the_first_bad_tensor(good, tmp_path, bad):
    def poison(p, m):
        p["state_dict"]["head.weight"][0, 1, 2, 2] = bad
        p["state_dict"]["head.weight"][1, 0, 0, 0] = bad

    path = variant(good, tmp_path / "nan.pt", poison)
    with pytest.raises(CheckpointError, match=r"weight 'head.weight' has 2 non-finite values \(NaN or Inf\) of 72"):
        load_checkpoint(path)


def test_random_bytes_are_not_a_torch_file_but_pickled_code_is_named(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match=r"is not a flowtie-dask checkpoint \(could not be read as a torch "
                                              r"file\)") as info:
        load_checkpoint(str(junk))
    assert "pickled code" not in str(info.value)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="could not be read as a torch file"):
        load_checkpoint(str(empty))

    class Code:
        def __reduce__(self):
            return (os.getcwd, ())

    for legacy in (False, True):
        evil = tmp_path / f"code{legacy}.pt"
        torch.save({"meta_json": "{}", "state_dict": {}, "x": Code()}, evil, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(CheckpointError, match=r"needs pickled code to load and was refused \(weights_only=True\)"):
            load_checkpoint(str(evil))


def test_checkpoints_are_read_with_weights_only(good, monkeypatch):
    seen = []
    real = torch.load

    def spy(*a, **k):
        seen.append(k.get("weights_only"))
        return real(*a, **k)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(good)
    assert seen == [True]


def test_a_malformed_meta_record_names_the_file_and_the_place(good, tmp_path):
    payload = torch.load(good, weights_only=True)
    payload["meta_json"] = '{"format": "flowtie-dask/checkpoint",\n "optics": {"energy_eV": }}'
    path = tmp_path / "badmeta.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"badmeta.pt': its meta_json record is not valid JSON \(line 2 column "
                                              r"26\): Expecting value"):
        load_checkpoint(str(path))


def test_a_full_disk_gives_one_line_and_keeps_the_earlier_checkpoint(good, tmp_path, monkeypatch):
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux) for a real ENOSPC")
    before = open(good, "rb").read()
    monkeypatch.setattr(checkpoint, "_open_for_writing", lambda tmp: open("/dev/full", "wb"))
    with pytest.raises(CheckpointError, match=r"the disk is full: the checkpoint '.*good.pt' \(\d+(\.\d)? [KM]iB\) could not be "
                                              r"written \(an earlier one there is unchanged\)") as info:
        save_checkpoint(good, model=SharedFlowModel(hidden=8, depth=3), meta={})
    assert "\n" not in str(info.value)
    assert open(good, "rb").read() == before
    assert not [n for n in os.listdir(tmp_path) if ".partial-" in n]
    # another OSError is not called a full disk
    monkeypatch.setattr(checkpoint, "_open_for_writing",
                        lambda tmp: (_ for _ in ()).throw(OSError(errno.EACCES, "Permission denied", tmp)))
    with pytest.raises(PermissionError):
        save_checkpoint(good, model=SharedFlowModel(hidden=8, depth=3), meta={})


# ------------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def probe_store(tmp_path_factory):
    from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store

    path = tmp_path_factory.mktemp("pf") / "pf.zarr"
    return simulate_to_store(SimulationParameters(material="GaAs", scan_pixels=8, detector_pixels=16, gpts=24,
                                                  lateral_cells=1, probe_frame=True), str(path), progress=False)


def tiny(**kw):
    from flowtie_dask.model.train import TrainingConfig

    return TrainingConfig(**{**dict(epochs=2, steps_per_epoch=3, batch_size=1, tile=4, n_q=16, validation_tiles=1,
                                    lr=1e-3, architecture={"name": "SharedFlowModel", "hidden": 4, "depth": 2}), **kw})


def test_a_non_finite_loss_stops_training_naming_the_step(probe_store, tmp_path):
    from flowtie_dask.model.train import TrainingError, train

    out = tmp_path / "m.pt"
    # a learning rate this large overflows float32 after the first step: step 2 of epoch 1 is non-finite
    with pytest.raises(TrainingError, match=r"the training loss became (nan|inf) at epoch 1, step 2 of 3 "
                                            r"\(lr 1e\+30\): lower --lr.*no checkpoint was written") as info:
        train(probe_store, str(out), tiny(lr=1e30), progress=False, log=lambda s: None)
    assert "\n" not in str(info.value)
    assert not out.exists()
    # a sane learning rate trains through the same steps, and a later blow-up keeps the last checkpoint
    train(probe_store, str(out), tiny(epochs=1), progress=False, log=lambda s: None)
    before = out.read_bytes()
    with pytest.raises(TrainingError, match=r"at epoch 2, step 2 of 3 .*m.pt' was left as it was"):
        train(probe_store, str(out), tiny(lr=1e30), resume=True, progress=False, log=lambda s: None)
    assert out.read_bytes() == before


def test_training_settings_must_be_finite(probe_store, tmp_path):
    from flowtie_dask.model.train import train

    with pytest.raises(ValueError, match="gamma = nan must be a finite number"):
        train(probe_store, str(tmp_path / "m.pt"), tiny(gamma=float("nan")), progress=False, log=lambda s: None)
    with pytest.raises(ValueError, match="--resume continues the checkpoint .* which does not exist"):
        train(probe_store, str(tmp_path / "m.pt"), tiny(), resume=True, progress=False, log=lambda s: None)

import json
import os

import numpy as np
import pytest
import torch

from flowtie_dask.geometry import ReconstructionGeometry
from flowtie_dask.methods import get_method
from flowtie_dask.model.checkpoint import CheckpointError, check_compatible, load_checkpoint
from flowtie_dask.model.dataset import TileDataset, TileSpec, split_members
from flowtie_dask.model.train import TrainingConfig, train
from flowtie_dask.runner import reconstruct
from flowtie_dask.simulate.collection import open_collection, simulate_collection
from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store
from flowtie_dask.store import open_scan_store
from tests.conftest import requires_gpu

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs torch with CUDA and a GPU; none found")

OPTICS = dict(scan_pixels=16, detector_pixels=16, gpts=24, lateral_size=6.0)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    out = tmp_path_factory.mktemp("coll") / "train"
    return simulate_collection(SimulationParameters(material="random-cubic", seed=10, **OPTICS), str(out), count=4,
                               thickness_cells_range=(1, 2), progress=False)


@pytest.fixture(scope="module")
def trained(collection, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("model") / "m.pt")
    cfg = TrainingConfig(epochs=2, steps_per_epoch=3, batch_size=2, tile=8, n_q=32, validation_tiles=2, lr=1e-3,
                         architecture={"name": "SharedFlowModel", "hidden": 8, "depth": 3})
    result = train(collection, out, cfg, progress=False, log=lambda s: None)
    return out, cfg, result


def test_collection_is_seeded_and_split_by_structure(collection):
    members = open_collection(collection)
    assert len(members) == 4
    index = json.load(open(os.path.join(collection, "collection.json")))
    assert [m["seed"] for m in index["members"]] == [10, 11, 12, 13]
    for m in members:
        st = open_scan_store(m)
        assert "probe_frame_phase" in st.truth and st.detector_shape == (16, 16)
    train_set, val_set = split_members(collection, seed=0)
    assert len(val_set) == 1 and len(train_set) == 3 and not set(train_set) & set(val_set)
    assert split_members(collection, seed=0) == (train_set, val_set)


def test_tile_dataset_items(collection):
    ds = TileDataset(open_collection(collection), TileSpec(tile=8, n_q=32), length=5, seed=1)
    a, b = ds[3], ds[3]
    assert a["didz"].shape == (32, 8, 8) and a["q"].shape == (32, 2) and a["phase"].shape == (32, 8, 8)
    assert torch.equal(a["didz"], b["didz"])  # deterministic per index
    assert torch.all(a["weight"] >= 0) and float(a["wavelength"]) == pytest.approx(0.019687, rel=1e-4)
    assert ds[0]["didz"].shape == (32, 8, 8)


def test_in_memory_items_equal_lazy_items(collection):
    stores = open_collection(collection)
    lazy = TileDataset(stores, TileSpec(tile=8, n_q=32), length=6, seed=2)
    held = TileDataset(stores, TileSpec(tile=8, n_q=32), length=6, seed=2, in_memory=True)
    assert held.nbytes == lazy.nbytes == 4 * 4 * 4 * 16**4  # 4 stores × (3 scans + truth) × 16⁴ float32
    assert all(isinstance(held._open[s][0], np.ndarray) for s in stores)
    for i in range(6):
        a, b = lazy[i], held[i]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_in_memory_gives_the_same_weights(collection, tmp_path):
    cfg = TrainingConfig(epochs=1, steps_per_epoch=2, batch_size=2, tile=8, n_q=32, validation_tiles=2, lr=1e-3,
                         architecture={"name": "SharedFlowModel", "hidden": 8, "depth": 3})
    logs = []
    train(collection, str(tmp_path / "lazy.pt"), cfg, progress=False, log=lambda s: None)
    train(collection, str(tmp_path / "held.pt"), TrainingConfig(**{**cfg.__dict__, "in_memory": True,
                                                                    "loader_workers": 2}),
          progress=False, log=logs.append)  # forked workers cut the tiles from the shared arrays
    a, b = load_checkpoint(str(tmp_path / "lazy.pt"))[2], load_checkpoint(str(tmp_path / "held.pt"))[2]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert logs[0].startswith("read 4 stores (0.0 GiB) into memory")


def test_cosine_schedule_and_time_limit(collection, tmp_path):
    from flowtie_dask.model.train import COSINE_FLOOR, scheduled_lr

    cfg = TrainingConfig(epochs=3, steps_per_epoch=1, batch_size=2, tile=8, n_q=32, validation_tiles=2, lr=1e-3,
                         lr_schedule="cosine", architecture={"name": "SharedFlowModel", "hidden": 8, "depth": 3})
    assert scheduled_lr(cfg, 0) == 1e-3 and scheduled_lr(cfg, 1) == pytest.approx(COSINE_FLOOR * 1e-3)
    assert scheduled_lr(cfg, 0.5) == pytest.approx(1e-3 * (COSINE_FLOOR + (1 - COSINE_FLOOR) / 2))
    assert scheduled_lr(TrainingConfig(lr=2e-4), 0.7) == 2e-4
    with pytest.raises(ValueError, match="unknown lr_schedule 'step'"):
        train(collection, str(tmp_path / "x.pt"), TrainingConfig(lr_schedule="step"), progress=False,
              log=lambda s: None)
    out = str(tmp_path / "cos.pt")
    hist = train(collection, out, cfg, progress=False, log=lambda s: None)["history"]
    assert [r["lr"] for r in hist] == pytest.approx([scheduled_lr(cfg, e / 3) for e in range(3)])
    # a time limit ends the run after the epoch that reaches it, with a checkpoint even between K epochs
    logs = []
    timed = TrainingConfig(**{**cfg.__dict__, "epochs": 50, "time_limit": 1e-3, "checkpoint_every": 10})
    hist = train(collection, str(tmp_path / "t.pt"), timed, progress=False, log=logs.append)["history"]
    assert len(hist) == 1 and load_checkpoint(str(tmp_path / "t.pt"))[1]["epoch"] == 1
    assert logs[-1] == "stopped after epoch 1: time limit 0.001 s reached"


def test_init_starts_from_another_checkpoint(trained, collection, tmp_path):
    src, cfg, _ = trained
    out = str(tmp_path / "tuned.pt")
    tuned = TrainingConfig(epochs=1, steps_per_epoch=1, batch_size=2, tile=8, n_q=32, validation_tiles=2, lr=1e-12,
                           init_from=src)  # default architecture asked for: the checkpoint's is used
    hist = train(collection, out, tuned, progress=False, log=lambda s: None)["history"]
    model, meta, payload = load_checkpoint(out)
    source = load_checkpoint(src)[2]["state_dict"]
    assert meta["architecture"]["hidden"] == 8 and meta["architecture"]["depth"] == 3
    assert len(hist) == 1 and meta["epoch"] == 1 and meta["training"]["init_from"] == src
    assert [st["epochs"] for st in meta["training"]["stages"]] == [2]  # the source's run
    for k, v in payload["state_dict"].items():
        torch.testing.assert_close(v, source[k], atol=1e-6, rtol=0)  # lr 1e-12: still the source's weights
    with pytest.raises(ValueError, match="not both"):
        train(collection, out, tuned, resume=True, progress=False, log=lambda s: None)
    with pytest.raises(ValueError, match="--init checkpoint 'nope.pt' does not exist"):
        train(collection, out, TrainingConfig(init_from="nope.pt"), progress=False, log=lambda s: None)


def test_cli_train_fine_tunes_the_default_on_two_collections(collection, tmp_path, capsys):
    from flowtie_dask.cli.main import main
    from flowtie_dask.model.checkpoint import default_model_path

    out = str(tmp_path / "mine.pt")
    args = ["train", collection, collection, "--out", out, "--epochs", "1", "--steps-per-epoch", "1",
            "--batch-size", "1", "--tile", "8", "--n-q", "32", "--lr-schedule", "cosine", "--no-progress"]
    assert main(args + ["--init", "default"]) == 0
    _, meta, _ = load_checkpoint(out)
    source = load_checkpoint(default_model_path())[1]
    assert meta["architecture"] == source["architecture"] and meta["training"]["init_from"] == default_model_path()
    assert len(meta["training"]["stages"]) == len(source["training"]["stages"]) + 1
    assert meta["training"]["train_stores"] == 6 and meta["training"]["data"] == [os.path.abspath(collection)] * 2
    assert main(args + ["--architecture", "paper", "--depth", "3", "--out", str(tmp_path / "p.pt")]) == 2
    assert "--depth applies to --architecture dimensionless or shared only" in capsys.readouterr().err
    assert not (tmp_path / "p.pt").exists()


def test_several_collections_are_split_one_by_one(collection):
    one = split_members(collection, seed=3)
    assert split_members([collection], seed=3) == one
    both = split_members([collection, collection], seed=3)
    assert both == (one[0] * 2, one[1] * 2)


def test_in_memory_refuses_a_collection_larger_than_memory(collection, monkeypatch):
    monkeypatch.setattr("flowtie_dask.backend.available_memory", lambda device="cpu": 2**20)
    with pytest.raises(ValueError, match=r"in memory needs 0\.0 GiB, more than the 0\.0 GiB available \(host, 70% usable\); "
                       "train without --in-memory"):
        TileDataset(open_collection(collection), TileSpec(tile=8, n_q=32), in_memory=True)


def test_store_without_probe_frame_truth_is_refused(tmp_path):
    path = simulate_to_store(SimulationParameters(material="GaAs", lateral_cells=1, scan_pixels=8, detector_pixels=8,
                                                  gpts=16), str(tmp_path / "s.zarr"), progress=False)
    with pytest.raises(ValueError, match="simulate training data with --probe-frame"):
        TileDataset([path], TileSpec(tile=4))


def test_training_writes_a_checkpoint_and_resumes(trained, collection):
    out, cfg, result = trained
    assert len(result["history"]) == 2
    for row in result["history"]:
        assert set(row["train"]) == {"total", "vf", "cont", "phase"} and np.isfinite(row["validation"]["total"])
    model, meta, payload = load_checkpoint(out)
    assert meta["epoch"] == 2 and meta["architecture"]["name"] == "SharedFlowModel"
    assert meta["optics"]["energy_eV"] == 300e3 and len(meta["optics"]["scan_step_A"]) == 2
    assert meta["training"]["lr"] == 1e-3 and meta["version"]
    cfg3 = TrainingConfig(**{**cfg.__dict__, "epochs": 3})
    again = train(collection, out, cfg3, resume=True, progress=False, log=lambda s: None)
    assert [r["epoch"] for r in again["history"]] == [1, 2, 3]
    meta3 = load_checkpoint(out)[1]
    assert meta3["epoch"] == 3 and meta3["training"]["epochs"] == 3
    assert [st["epochs"] for st in meta3["training"]["stages"]] == [2]  # the run it resumed


@pytest.mark.parametrize("device,workers", [("cpu", 0), ("cpu", 2), pytest.param("cuda", 2, marks=requires_cuda)])
def test_a_few_training_steps_lower_the_loss(collection, tmp_path, device, workers):
    from flowtie_dask.model.registry import build_model
    from flowtie_dask.model.train import _batches, _loss

    cfg = TrainingConfig(epochs=3, steps_per_epoch=5, batch_size=2, tile=8, n_q=32, validation_tiles=4, lr=3e-3,
                         architecture={"name": "SharedFlowModel", "hidden": 8, "depth": 3}, device=device,
                         loader_workers=workers)
    torch.manual_seed(cfg.seed)
    untrained = build_model(cfg.architecture)
    out = str(tmp_path / "m.pt")
    train(collection, out, cfg, progress=False, log=lambda s: None)
    trained, meta, _ = load_checkpoint(out)  # loads on the CPU whatever it trained on
    assert meta["training"]["device"] == device and next(trained.parameters()).device.type == "cpu"
    raw = torch.load(out, weights_only=True)  # no map_location: a GPU-trained file must hold CPU tensors
    assert all(t.device.type == "cpu" for t in raw["state_dict"].values())
    ds = TileDataset(open_collection(collection), TileSpec(tile=8, n_q=32), length=64, seed=123)
    batches = list(_batches(ds, 4, np.random.default_rng(5), 3))
    with torch.no_grad():
        before = np.mean([float(_loss(untrained.eval(), b, cfg, "cpu")[0]) for b in batches])
        after = np.mean([float(_loss(trained, b, cfg, "cpu")[0]) for b in batches])
    assert after < 0.8 * before


def test_save_load_gives_identical_predictions(trained, tmp_path):
    out, _, _ = trained
    m1, _, _ = load_checkpoint(out)
    m2, _, _ = load_checkpoint(out)
    x = torch.rand(1, 32, 8, 8)
    i0 = torch.rand(1, 32, 8, 8) + 0.1
    q = torch.rand(32, 2)
    assert torch.equal(m1(x, i0, q), m2(x, i0, q))


def test_mismatched_optics_are_refused(trained, collection):
    out, _, _ = trained
    _, meta, _ = load_checkpoint(out)
    st = open_scan_store(open_collection(collection)[0])
    geo = ReconstructionGeometry.from_metadata(st.metadata, scan_shape=st.scan_shape, detector_shape=st.detector_shape)
    check_compatible(meta["optics"], geo)  # its own training data fit
    for change, word in [(dict(energy=200e3), "energy_eV"), (dict(semiangle=30.0), "semiangle_mrad"),
                         (dict(scan_step=(0.1, 0.1)), "scan_step_A")]:
        other = ReconstructionGeometry(**{**geo.__dict__, **change})
        with pytest.raises(CheckpointError, match=f"trained for {word}.*use --method tie"):
            check_compatible(meta["optics"], other)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_code_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"meta_json": "{}", "state_dict": {}, "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="pickled code"):
        load_checkpoint(str(path))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "none.pt"))


def test_flowtie_tiled_equals_whole_scan(trained, tmp_path):
    """--method flowtie on tiles (fields per tile, integration over the whole scan per detector-pixel block
    after a rechunk, projection per tile) equals the whole-scan reconstruction; other sampling is refused."""
    from flowtie_dask.evaluate import evaluate_result

    out, _, _ = trained
    # GaAs 1 cell at 32 positions (0.18 Å step) is outside this model's training range: refused
    store = simulate_to_store(SimulationParameters(material="GaAs", scan_pixels=32, detector_pixels=16, gpts=24,
                                                   lateral_cells=1), str(tmp_path / "g.zarr"), progress=False)
    with pytest.raises(CheckpointError, match="scan_step_A"):
        reconstruct(store, get_method("flowtie", model=out), progress=False)
    # a held-out structure from the same generator and optics
    store = simulate_to_store(SimulationParameters(material="random-cubic", seed=14, **OPTICS),
                              str(tmp_path / "g2.zarr"), progress=False)
    whole = reconstruct(store, get_method("flowtie", model=out), progress=False)
    assert whole.attrs["method"] == "flowtie" and whole.attrs["model"] == os.path.abspath(out)
    mse_whole = evaluate_result(whole, store)["mse"]
    for tile in (8, (4, 16)):
        tiled = reconstruct(store, get_method("flowtie", model=out), tile_size=tile, halo=8, progress=False)
        assert tiled.attrs["integration"] == "global" and tiled.attrs["n_tiles"] == 4
        d = np.angle(np.exp(1j * (tiled.phase - whole.phase)))
        assert float(np.mean((d - d.mean()) ** 2)) <= 0.05 * mse_whole  # measured ~1e-7 of it
    # the symmetry-averaged model is as local as the plain one: tiled still equals whole
    whole_sym = reconstruct(store, get_method("flowtie", model=out, symmetry="d4"), progress=False)
    tiled_sym = reconstruct(store, get_method("flowtie", model=out, symmetry="d4"), tile_size=8, halo=8,
                            progress=False)
    assert whole_sym.attrs["symmetry"] == tiled_sym.attrs["symmetry"] == "d4"
    d = np.angle(np.exp(1j * (tiled_sym.phase - whole_sym.phase)))
    assert float(np.mean((d - d.mean()) ** 2)) <= 0.05 * mse_whole
    d = np.angle(np.exp(1j * (whole_sym.phase - whole.phase)))
    assert float(np.mean((d - d.mean()) ** 2)) > 1e-4 * mse_whole  # and it is not the plain prediction
    with pytest.raises(ValueError, match="method 'tie' takes no option 'symmetry'"):
        get_method("tie", symmetry="mirror")
    # integrating inside each tile instead is what the global path avoids
    local = reconstruct(store, get_method("flowtie", model=out), tile_size=8, halo=8, integration="tile",
                        progress=False)
    assert local.attrs["integration"] == "tile"


@pytest.mark.parametrize("client", [None, "inline"])
def test_the_global_path_runs_each_tiles_model_once(trained, tmp_path, monkeypatch, client):
    """The field of a tile feeds the rechunk and the repair reports: it is computed once, not once for each
    (an optimised array graph once fused the field tasks under new keys, so every tile's model ran twice)."""
    import collections

    import flowtie_dask.runner.graph as graph

    out, _, _ = trained
    store = simulate_to_store(SimulationParameters(material="random-cubic", seed=14, **OPTICS),
                              str(tmp_path / "g.zarr"), progress=False)
    calls = collections.Counter()
    original = graph.field_task

    def counted(*args, **kwargs):
        calls[kwargs["name"]] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(graph, "field_task", counted)
    res = reconstruct(store, get_method("flowtie", model=out), tile_size=8, halo=8, progress=False, client=client)
    assert res.attrs["integration"] == "global" and res.attrs["n_tiles"] == 4
    assert sorted(calls.values()) == [1, 1, 1, 1] and len(calls) == 4


def test_ddp_under_torchrun_on_cpu(collection, tmp_path):
    """Two gloo ranks under torchrun: rank 0 writes one checkpoint that records both; DDP kept the ranks'
    weights equal, so training the same run again gives the same weights."""
    import subprocess
    import sys

    outs = []
    for run in range(2):
        out = str(tmp_path / f"ddp{run}.pt")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(29511 + run),
               "-m", "flowtie_dask.cli.main", "train", collection, "--out", out, "--ddp", "--epochs", "1",
               "--steps-per-epoch", "2", "--batch-size", "1", "--tile", "8", "--n-q", "16", "--hidden", "8",
               "--no-progress"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs.append(out)
    (m1, meta, _), (m2, _, _) = load_checkpoint(outs[0]), load_checkpoint(outs[1])
    assert meta["training"]["world_size"] == 2 and meta["epoch"] == 1
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


@requires_gpu
def test_flowtie_on_gpu_equals_cpu(trained, tmp_path):
    """The runner's FlowTIE on CuPy tiles (model on the GPU through DLPack) gives the CPU's phase."""
    out, _, _ = trained
    store = simulate_to_store(SimulationParameters(material="random-cubic", seed=14, **OPTICS),
                              str(tmp_path / "g.zarr"), progress=False)
    cpu = reconstruct(store, get_method("flowtie", model=out), tile_size=8, halo=8, progress=False)
    gpu = reconstruct(store, get_method("flowtie", model=out), tile_size=8, halo=8, progress=False, device="gpu")
    d = np.angle(np.exp(1j * (gpu.phase - cpu.phase)))
    assert float(np.mean((d - d.mean()) ** 2)) < 1e-6 * float(np.var(cpu.phase))


def test_flowtie_global_integration_on_a_distributed_cluster(trained, tmp_path):
    """The three-stage graph (fields → rechunk → integration → projection) on distributed workers equals the
    threaded run (the rechunk must not go through P2P shuffling, whose outputs delayed tasks can lose)."""
    from flowtie_dask.cluster import cluster_client

    out, _, _ = trained
    store = simulate_to_store(SimulationParameters(material="random-cubic", seed=14, **OPTICS),
                              str(tmp_path / "g.zarr"), progress=False)
    local = reconstruct(store, get_method("flowtie", model=out), tile_size=8, halo=8, progress=False)
    import dask

    # large scans would make dask pick P2P for these rechunks; the runner must not, even when configured
    with cluster_client(workers=2, dashboard=None, announce=None) as client, \
            dask.config.set({"array.rechunk.method": "p2p"}):
        dist = reconstruct(store, get_method("flowtie", model=out), tile_size=8, halo=8, client=client,
                           progress=False)
    assert dist.attrs["integration"] == "global"
    np.testing.assert_allclose(dist.phase, local.phase, atol=1e-5)


@pytest.mark.parametrize("in_memory", [False, True])
def test_a_store_of_counts_gives_the_same_tiles_as_its_normalised_twin(collection, tmp_path, in_memory):
    """Training reads a counts store through its scale (normalised = stored × scale), as read_block does."""
    import shutil

    import zarr

    src = open_collection(collection)[0]
    twin = str(tmp_path / "counts.zarr")
    shutil.copytree(src, twin)
    arr = zarr.open_group(twin, mode="r+")["intensity"]
    arr[...] = np.asarray(arr[...]) / np.array([2.0, 4.0, 8.0], dtype=np.float32)[:, None, None, None, None]
    arr.attrs["scale"] = [2.0, 4.0, 8.0]
    a = TileDataset([src], TileSpec(tile=8, n_q=32), length=3, seed=5, in_memory=in_memory)
    b = TileDataset([twin], TileSpec(tile=8, n_q=32), length=3, seed=5, in_memory=in_memory)
    for i in range(3):
        x, y = a[i], b[i]
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_allclose(y[k].numpy(), x[k].numpy(), rtol=1e-5, atol=1e-9, err_msg=k)


def test_dose_aware_model_starts_from_the_general_one_and_trains_on_noisy_tiles(collection, tmp_path):
    """``--architecture dose-aware --init general``: the general model's weights with the noise channel at zero
    (so it starts as the same model); tiles drawn with shot noise reach its noise channel during training."""
    from flowtie_dask.cli.main import main
    from flowtie_dask.model.checkpoint import shipped_model
    from flowtie_dask.model.dimensionless import DoseAwareFlowModel

    out = str(tmp_path / "dose.pt")
    assert main(["train", collection, "--out", out, "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
                 "--tile", "8", "--n-q", "32", "--lr", "1e-12", "--no-progress", "--init", "general",
                 "--architecture", "dose-aware", "--dose-range", "1e3", "1e4", "--noise-free-fraction", "0"]) == 0
    model, meta, payload = load_checkpoint(out)
    source = load_checkpoint(shipped_model("general"))[2]["state_dict"]
    assert isinstance(model, DoseAwareFlowModel) and meta["architecture"]["name"] == "DoseAwareFlowModel"
    assert meta["optics"]["kind"] == "dimensionless"  # its record is in the dimensionless groups, as general's
    assert meta["optics"]["dose_per_pattern"] == [1e3, 1e4]
    stem = payload["state_dict"]["stem.weight"]
    torch.testing.assert_close(stem[:, :12], source["stem.weight"], atol=1e-6, rtol=0)
    assert float(stem[:, 12].abs().max()) < 1e-6  # lr 1e-12: the new channel still (nearly) at zero weight
    seen = []
    original = DoseAwareFlowModel.input_parts

    def spy(self, *args, optics=None, **kwargs):
        seen.append(optics["electrons"].clone())
        return original(self, *args, optics=optics, **kwargs)

    DoseAwareFlowModel.input_parts = spy
    try:
        assert main(["train", collection, "--out", out, "--resume", "--epochs", "2", "--steps-per-epoch", "1",
                     "--batch-size", "2", "--tile", "8", "--n-q", "32", "--no-progress",
                     "--dose-range", "1e3", "1e4", "--noise-free-fraction", "0"]) == 0
    finally:
        DoseAwareFlowModel.input_parts = original
    drawn = torch.cat([e.reshape(-1) for e in seen])
    assert len(drawn) and bool(((drawn >= 1e3) & (drawn <= 1e4)).all())  # the tiles' doses, each in the range

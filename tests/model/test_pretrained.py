"""The pretrained models shipped in the package: ``general`` (the default, trained across optics) and ``paper-64``
(the paper's single setting, kept for Table 1); both trained on random crystals only, never GaAs or SrTiO3."""

import os

import pytest
import torch

from flowtie_dask.cli.main import main
from flowtie_dask.evaluate import evaluate_result
from flowtie_dask.methods import get_method
from flowtie_dask.model.checkpoint import DEFAULT_MODEL, SHIPPED_MODELS, default_model_path, load_checkpoint, shipped_model
from flowtie_dask.runner import reconstruct
from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store


def test_shipped_models_are_small_and_safe():
    assert DEFAULT_MODEL == "general" and default_model_path() == shipped_model("general")
    for name in SHIPPED_MODELS:
        path = shipped_model(name)
        assert os.path.isfile(path) and os.path.getsize(path) < 5 * 2**20
        model, meta, _ = load_checkpoint(path)  # weights_only=True inside
        assert sum(p.numel() for p in model.parameters()) < 100_000
        first = (meta["training"]["stages"] or [meta["training"]])[0]  # the run the later ones resumed
        assert first["device"] == "cpu"


def test_paper_64_is_the_papers_setting():
    model, meta, _ = load_checkpoint(shipped_model("paper-64"))
    assert meta["architecture"]["name"] == "SharedFlowModel"
    assert meta["optics"]["energy_eV"] == 300e3 and meta["optics"]["semiangle_mrad"] == 20.0
    assert meta["optics"]["defocus_step_A"] == 20.0
    lo, hi = meta["optics"]["scan_step_A"]
    assert lo < 0.1767 < hi  # the paper's GaAs 2×2-cell scan step
    first = (meta["training"]["stages"] or [meta["training"]])[0]
    assert first["train_stores"] >= 30 and first["validation_stores"] >= 1


def test_general_records_its_ranges_in_dimensionless_units():
    _, meta, _ = load_checkpoint(default_model_path())
    assert meta["architecture"]["name"] == "DimensionlessFlowModel"
    rec = meta["optics"]
    assert rec["kind"] == "dimensionless" and rec["dose_per_pattern"] == [1e3, 1e6]
    r = rec["ranges"]
    assert r["energy_kV"][0] < 65 and r["energy_kV"][1] == pytest.approx(300, abs=1)
    assert r["step_probe"][0] <= 0.11 and r["step_probe"][1] >= 0.5
    assert r["defocus_phase"][0] <= 0.05 and r["defocus_phase"][1] >= 2.0
    assert r["cs_phase"][0] == 0 and r["edge_aperture"][0] == 0
    assert meta["training"]["dose"] == [1e3, 1e6]


@pytest.mark.parametrize("name", ["general", "paper-64"])
def test_shipped_flowtie_beats_tie_on_gaas(tmp_path, name):
    """The paper's claim on its first Table-1 setting, with models that never saw GaAs."""
    torch.set_num_threads(os.cpu_count() or 1)
    store = simulate_to_store(SimulationParameters(material="GaAs", lateral_cells=2, thickness_cells=1, scan_pixels=64,
                                                   detector_pixels=64), str(tmp_path / "gaas.zarr"), progress=False)
    tie = evaluate_result(reconstruct(store, get_method("tie"), progress=False), store)["mse"]
    flowtie = evaluate_result(reconstruct(store, get_method("flowtie", model=name), progress=False), store)["mse"]
    assert flowtie < 0.6 * tie  # measured: paper-64 0.00120, general 0.00137, TIE 0.00248 rad²


def test_general_accepts_other_optics_and_paper_64_refuses_them(tmp_path, capsys):
    store = simulate_to_store(SimulationParameters(material="GaAs", lateral_cells=1, energy=200e3, semiangle=25.0,
                                                   defocus_step=30.0, scan_pixels=20, detector_pixels=24, gpts=32),
                              str(tmp_path / "g.zarr"), progress=False)
    assert main(["reconstruct", store, "--method", "flowtie", "--out", str(tmp_path / "ok.zarr"), "--no-progress"]) == 0
    assert main(["reconstruct", store, "--method", "flowtie", "--model", "paper-64", "--out", str(tmp_path / "r.zarr"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "trained for energy_eV = 300000 eV" in err and "use --method tie" in err
    assert not (tmp_path / "r.zarr").exists()


def test_general_refuses_outside_its_ranges_naming_the_quantity(tmp_path, capsys):
    """A 1.2 Å scan step at 300 kV / 30 mrad: the step is 1.8 probe radii, beyond the trained step_probe."""
    store = simulate_to_store(SimulationParameters(material="GaAs", lateral_cells=2, semiangle=30.0, scan_pixels=10,
                                                   detector_pixels=32, gpts=64), str(tmp_path / "s.zarr"),
                              progress=False)
    assert main(["reconstruct", store, "--method", "flowtie", "--out", str(tmp_path / "r.zarr"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the model was trained for step_probe (the scan step against the probe size" in err
    assert "use --method tie" in err and not (tmp_path / "r.zarr").exists()

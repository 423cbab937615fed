"""The global path through files (runner.spill): the same object as through memory, every worker's task holding
one tile or one block of detector rows, the scratch folder gone after the run (also after a failed one), and
"auto" choosing files only above SPILL_BYTES."""

import os

import numpy as np
import pytest

from flowtie_dask.methods import get_method
from flowtie_dask.runner import reconstruct
from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("spill") / "small.zarr"
    return simulate_to_store(SimulationParameters(material="SrTiO3", lateral_cells=2, scan_pixels=24,
                                                  detector_pixels=24, gpts=32), str(path), progress=False)


@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("tile", [12, (10, 7)])
def test_files_give_the_object_that_memory_gives(small, tmp_path, periodic, tile):
    """TIE on tiles through the scratch files equals TIE through memory (the same sums in the same order), for
    tiles on and off the scan's divisors, periodic and mirrored (blocks that read their q → −q image's rows);
    nothing is left in the scratch folder."""
    kw = dict(tile_size=tile, halo=4, periodic=periodic, progress=False)
    mem = reconstruct(small, get_method("tie"), scratch=None, **kw)
    files = reconstruct(small, get_method("tie"), scratch=str(tmp_path), **kw)
    assert mem.attrs["transpose"] == "memory" and files.attrs["transpose"] == "files"
    assert files.attrs["integration"] == "global" and files.attrs["n_tiles"] > 1
    np.testing.assert_allclose(files.phase, mem.phase, rtol=0, atol=1e-6)
    np.testing.assert_allclose(files.illumination, mem.illumination, rtol=1e-6)
    assert os.listdir(tmp_path) == []


def test_a_gradient_field_method_goes_through_files_too(small, tmp_path):
    """FlowTIE's field (the model's gradients) takes the same route with the same result."""
    kw = dict(tile_size=12, halo=4, progress=False)
    method = get_method("flowtie", consistency=0)
    mem = reconstruct(small, method, scratch=None, **kw)
    files = reconstruct(small, method, scratch=str(tmp_path), **kw)
    assert files.attrs["transpose"] == "files"
    np.testing.assert_allclose(files.phase, mem.phase, rtol=0, atol=1e-5)


def test_a_failed_run_leaves_no_scratch(small, tmp_path, monkeypatch):
    """A stage that fails mid-run (here the integration) raises, and the scratch folder is removed."""
    import flowtie_dask.runner.spill as spill

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(spill, "integrate_window", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        reconstruct(small, get_method("tie"), tile_size=12, halo=4, scratch=str(tmp_path), progress=False)
    assert os.listdir(tmp_path) == []


def test_auto_chooses_files_above_the_threshold(small, tmp_path, monkeypatch):
    """"auto" keeps a field under SPILL_BYTES in memory and sends a larger one to files (in ``cache`` when one
    is given); a larger field no longer falls back to the per-tile solve for want of memory."""
    import flowtie_dask.runner as runner

    kw = dict(tile_size=12, halo=4, progress=False)
    assert reconstruct(small, get_method("tie"), **kw).attrs["transpose"] == "memory"
    monkeypatch.setattr(runner, "SPILL_BYTES", 1000)
    monkeypatch.setattr(runner, "_memory_of", lambda client: 1e6)  # too little for the field in memory
    res = reconstruct(small, get_method("tie"), cache=str(tmp_path / "cache"), **kw)
    assert res.attrs["transpose"] == "files" and res.attrs["integration"] == "global"
    assert not [n for n in os.listdir(tmp_path / "cache") if n.startswith("flowtie-scratch-")]

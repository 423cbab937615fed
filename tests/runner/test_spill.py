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


@pytest.mark.parametrize("scratch", [None, "files"])
def test_the_dark_field_clip_is_taken_over_the_whole_scan_from_the_tiles_sums(small, tmp_path, scratch):
    """TIE clips Ī(q) at eps × its largest value over the detector (the summary of the whole field): the tiles'
    sums of I₀ give it, so tiled equals whole-scan where the clip binds on most pixels (eps = 0.2), through memory
    and through files; the summary equals the plain largest scan-mean of the focus scan."""
    from flowtie_dask.runner.tasks import field_summary_of, field_total
    from flowtie_dask.store import open_scan_store

    tie = get_method("tie", eps=0.2)
    i0 = np.asarray(open_scan_store(small).intensity[1], dtype=np.float64)
    ibar = i0.mean(axis=(0, 1))
    assert np.mean(ibar < 0.2 * ibar.max()) > 0.5  # the clip binds on most pixels
    tiles = [np.stack([np.zeros_like(i0[a:a + 8, b:b + 12]), i0[a:a + 8, b:b + 12]]).astype(np.float32)
             for a in range(0, 24, 8) for b in range(0, 24, 12)]
    got = field_summary_of(24 * 24, *[field_total(t) for t in tiles], method=tie)
    np.testing.assert_allclose(got, ibar.max(), rtol=1e-6)
    whole = reconstruct(small, tie, tile_size=None, progress=False)
    tiled = reconstruct(small, tie, tile_size=(8, 12), scratch=None if scratch is None else str(tmp_path),
                        progress=False)
    assert tiled.attrs["integration"] == "global" and tiled.attrs["transpose"] == ("files" if scratch else "memory")
    d = tiled.phase - whole.phase
    np.testing.assert_allclose(d - d.mean(), 0, atol=1e-5)


def test_tie_through_files_projects_from_the_fields_intensity(small, tmp_path, monkeypatch):
    """TIE's field holds I₀ (``field_i0``): through files the projections take it from there and read the store
    only in the field stage (once per tile), with the same object and the same repair report as through memory
    (which reads the focus scan again per tile)."""
    from flowtie_dask.runner import tasks

    reads = []
    real = tasks.read_aligned

    def counting(path, geometry, rows, cols, *, defocus=None, bright_field=None):
        reads.append(defocus)
        return real(path, geometry, rows, cols, defocus=defocus, bright_field=bright_field)

    monkeypatch.setattr(tasks, "read_aligned", counting)
    kw = dict(tile_size=12, halo=4, progress=False)
    method = get_method("tie", consistency=1)
    mem = reconstruct(small, method, scratch=None, **kw)
    n = mem.attrs["n_tiles"]
    assert n == 4 and reads.count(None) == n and len(reads) == 2 * n  # fields, then the projections' focus scans
    reads.clear()
    files = reconstruct(small, method, scratch=str(tmp_path), **kw)
    assert files.attrs["transpose"] == "files" and reads == [None] * n
    np.testing.assert_allclose(files.phase, mem.phase, rtol=0, atol=1e-6)
    np.testing.assert_allclose(files.amplitude, mem.amplitude, rtol=1e-6)
    assert files.attrs["data_repairs"] == mem.attrs["data_repairs"]


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
    assert not [n for n in os.listdir(tmp_path / "cache") if n.startswith(runner.SCRATCH_PREFIX)]


def test_where_auto_puts_the_files(tmp_path):
    """"auto": files in the cache; in the temporary folder only for runs on this machine (a cluster elsewhere may
    not see it: memory there); a folder given is made absolute and refused, naming the need, when too small."""
    from flowtie_dask.runner import SCRATCH_PREFIX, SPILL_BYTES, _new_scratch, _spill_folder

    big = 4 * SPILL_BYTES
    assert _spill_folder("auto", SPILL_BYTES // 2, str(tmp_path), None) is None
    assert _spill_folder("auto", big, str(tmp_path), object()) == str(tmp_path)
    assert _spill_folder("auto", big, None, None) is not None  # in-process: the temporary folder
    assert _spill_folder("auto", big, None, object()) is None  # a remote scheduler: memory
    assert _spill_folder(None, big, str(tmp_path), None) is None
    os.chdir(tmp_path)
    assert _spill_folder("rel", 10, None, None) == str(tmp_path / "rel")
    with pytest.raises(ValueError, match="GiB free and the run's files need"):
        _spill_folder(str(tmp_path), 1e18, None, None)
    stale = tmp_path / f"{SCRATCH_PREFIX}killed"
    stale.mkdir()
    made = _new_scratch(str(tmp_path), sweep=True)  # a killed run's folder in the resume folder is swept
    assert os.path.isabs(made) and not stale.exists() and os.path.basename(made).startswith(SCRATCH_PREFIX)


def test_a_resumed_run_through_files_loads_fields_and_projections(small, tmp_path):
    """With a cache: kept fields and finished projections are loaded into the files route, the rest recomputed,
    and the object is the same."""
    kw = dict(tile_size=12, halo=4, progress=False, scratch=str(tmp_path / "s"), keep_fields=True)
    (tmp_path / "s").mkdir()
    cache = tmp_path / "cache"
    first = reconstruct(small, get_method("tie"), cache=str(cache), **kw)
    projections = sorted(n for n in os.listdir(cache) if n.startswith("project-"))
    assert len(projections) == 4 and len([n for n in os.listdir(cache) if n.startswith("field-")]) == 4
    for name in projections[:2]:
        os.remove(cache / name)
    again = reconstruct(small, get_method("tie"), cache=str(cache), **kw)
    assert again.attrs["tiles_reused"] == 2 and again.attrs["fields_reused"] == 4
    np.testing.assert_allclose(again.phase, first.phase, rtol=0, atol=1e-6)
    assert os.listdir(tmp_path / "s") == []


def test_files_on_two_worker_processes(small, tmp_path):
    """Two worker processes write and read the same scratch arrays (whole chunks each) and give the in-process
    object."""
    from flowtie_dask.cluster import cluster_client

    kw = dict(tile_size=12, halo=4, progress=False, periodic=False)
    here = reconstruct(small, get_method("tie"), scratch=None, **kw)
    with cluster_client(workers=2, threads=1, dashboard=None, announce=None) as client:
        there = reconstruct(small, get_method("tie"), client=client, scratch=str(tmp_path), **kw)
    assert there.attrs["transpose"] == "files"
    np.testing.assert_allclose(there.phase, here.phase, rtol=0, atol=1e-6)
    assert os.listdir(tmp_path) == []


def test_a_field_kept_in_memory_holds_only_its_own_bytes(small):
    """TIE writes its field over the block it is given (``own``); the memory route keeps the field in the workers,
    so the field task copies it out (``compact``) rather than keep the three scans alive; the files route writes the
    view out as it is. Both are the same field."""
    from flowtie_dask.runner.tasks import field_task
    from flowtie_dask.runner.tiles import plan_tiles
    from flowtie_dask.store import StoreHandle

    handle = StoreHandle(small)
    geometry = handle.geometry()
    tile = plan_tiles(geometry.scan_shape, (12, 12), 0, periodic=True)[0]
    kept, _ = field_task(handle, geometry, tile, method=get_method("tie"))
    view, _ = field_task(handle, geometry, tile, method=get_method("tie"), compact=False)
    assert kept.base is None or kept.base.nbytes == kept.nbytes
    assert view.base is not None and view.base.nbytes == 1.5 * view.nbytes  # the focus is second: a view
    np.testing.assert_array_equal(kept, view)


def test_a_field_summary_of_the_earlier_form_is_named_before_any_tile_is_read(small, monkeypatch):
    """A plug-in's ``field_summary(field)`` (the earlier per-block form) is refused with its name when the graph
    is built, not after every field was made."""
    import flowtie_dask.runner.graph as graph
    from flowtie_dask.methods.tie import TIE

    class OldSummary(TIE):
        def field_summary(self, field):
            return 1.0

    monkeypatch.setattr(graph, "field_task", lambda *a, **k: pytest.fail("a tile was read"))
    with pytest.raises(TypeError, match=r"field_summary takes \(field\); it must take \(total, count\)"):
        reconstruct(small, OldSummary(), tile_size=12, progress=False)

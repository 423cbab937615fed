"""The method contract, once for every registered method: the same method object gives the same phase
inline (one thread, Dask's synchronous scheduler), on in-process Dask threads and on a local 2-worker
cluster, for several tilings; and each method against a slow, obvious reference where one exists.

Tolerances (rad, max |Δphase| between executors): 0 for every method — the same tasks run the same
NumPy/torch code on the same inputs, so executors must agree bit for bit. Tilings of one method agree
to the method's own tolerance: exactly for the reduction (iCoM), to the boundary error of haloed
tiles for the projecting methods (checked in tests/runner/test_runner_tiles.py); here each tiling is compared
across executors only.
"""

import math

import numpy as np
import pytest

from flowtie_dask.methods import REGISTRY, get_method
from flowtie_dask.runner import reconstruct

SMALL = ["--lateral-cells", "1", "--scan-pixels", "12", "--detector-pixels", "16", "--gpts", "24", "--no-progress",
         "--workers", "0"]
TILINGS = [None, (6, 6), (5, 7)]
TILED = [name for name, cls in REGISTRY.items() if cls.kind != "whole"]
WHOLE = [name for name, cls in REGISTRY.items() if cls.kind == "whole"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from flowtie_dask.cli.main import main

    path = tmp_path_factory.mktemp("contract") / "g.zarr"
    assert main(["simulate", "GaAs", "--out", str(path), *SMALL]) == 0
    return str(path)


@pytest.fixture(scope="module")
def tiny_model(store, tmp_path_factory):
    """A small random FlowTIE model whose optics record fits the store (fast to run, unlike the shipped ones)."""
    import torch

    from flowtie_dask.geometry import ReconstructionGeometry
    from flowtie_dask.model.architectures import SharedFlowModel
    from flowtie_dask.model.checkpoint import optics_record, save_checkpoint
    from flowtie_dask.store import open_scan_store

    st = open_scan_store(store)
    geo = ReconstructionGeometry.from_metadata(st.metadata, scan_shape=st.scan_shape, detector_shape=st.detector_shape)
    torch.manual_seed(0)
    return save_checkpoint(str(tmp_path_factory.mktemp("model") / "tiny.pt"), model=SharedFlowModel(hidden=4, depth=2),
                           meta={"optics": optics_record(geo)})


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as lc, \
            Client(lc) as client:
        yield client


def _method(name, tiny_model):
    return get_method(name, model=tiny_model) if name == "flowtie" else get_method(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", TILED)
def test_every_method_gives_the_same_phase_on_every_executor(store, tiny_model, cluster, name):
    import torch

    torch.set_num_threads(1)
    for tile in TILINGS:
        method = _method(name, tiny_model)
        inline = reconstruct(store, method, tile_size=tile, halo=4, client="inline", progress=False)
        threads = reconstruct(store, method, tile_size=tile, halo=4, client=None, progress=False)
        dist = reconstruct(store, method, tile_size=tile, halo=4, client=cluster, progress=False)
        assert np.isfinite(inline.phase).all() and inline.phase.std() > 0
        np.testing.assert_array_equal(threads.phase, inline.phase, err_msg=f"{name} {tile} threads")
        np.testing.assert_array_equal(dist.phase, inline.phase, err_msg=f"{name} {tile} cluster")
        assert inline.attrs["method"] == name and inline.attrs["n_tiles"] == (1 if tile is None else
                                                                               math.ceil(12 / tile[0]) * math.ceil(12 / tile[1]))


@pytest.fixture(scope="module")
def dense_store(tmp_path_factory):
    """A periodic 8×8 scan whose object grid is the 8×8 detector window (what the dense GD holds)."""
    from tests.baselines.test_gd import _write, simulate

    inten, geo, _ = simulate(8, 0.4)
    return _write(str(tmp_path_factory.mktemp("dense") / "tiny.zarr"), inten, geo)


@pytest.mark.slow
@pytest.mark.parametrize("name", WHOLE)
def test_every_whole_scan_method_gives_the_same_phase_on_every_executor(store, dense_store, cluster, name):
    """Whole-scan methods run as one task: inline, on a Dask thread and on a worker of a 2-worker cluster
    (tilings do not apply); and against the in-memory kernel on the store's arrays read directly."""
    import torch

    from flowtie_dask.baselines.gd import dense_gd_reconstruct, gd_reconstruct
    from flowtie_dask.geometry import ReconstructionGeometry
    from flowtie_dask.store import open_scan_store

    torch.set_num_threads(1)
    path = dense_store if name == "gd-dense" else store
    method = get_method(name, iterations=4, **({"readout": "diagonal"} if name == "gd-dense" else {}))
    inline = reconstruct(path, method, client="inline", progress=False)
    threads = reconstruct(path, method, client=None, progress=False)
    dist = reconstruct(path, method, client=cluster, progress=False)
    assert np.isfinite(inline.phase).all() and inline.phase.std() > 0
    np.testing.assert_array_equal(threads.phase, inline.phase, err_msg=f"{name} threads")
    np.testing.assert_array_equal(dist.phase, inline.phase, err_msg=f"{name} cluster")
    assert inline.attrs["method"] == name and inline.attrs["n_tiles"] == 1 and inline.attrs["integration"] == "whole"
    # the reference: the kernel on the whole stored series, no store, no runner
    st = open_scan_store(path)
    geo = ReconstructionGeometry.from_metadata(st.metadata, scan_shape=st.scan_shape, detector_shape=st.detector_shape)
    data = np.asarray(st.intensity[:], dtype=np.float32)
    if name == "gd":
        obj, losses = gd_reconstruct(data, geo, iterations=4)
    else:
        a, losses = dense_gd_reconstruct(data, geo, iterations=4)
        obj = np.diag(a).reshape(geo.detector_shape)
    np.testing.assert_allclose(inline.attrs["losses"], losses, rtol=1e-6)
    lit = inline.illumination > 0.05 * inline.illumination.max()
    d = np.angle(np.exp(1j * (inline.phase - np.angle(obj))))[lit]
    assert np.abs(d - d.mean()).max() < 1e-5


def _gpu_ready():
    from flowtie_dask.backend import cupy_available

    return cupy_available()


#: max |Δphase| (rad, lit pixels, after removing the mean) between the GPU and CPU runs of each method: the
#: FFT libraries differ in round-off; gradient descent amplifies it over its steps
GPU_TOLERANCE = {"tie": 1e-5, "icom": 1e-5, "flowtie": 1e-4, "gd": 1e-4, "gd-dense": 1e-3}


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_ready(), reason="needs CuPy and an NVIDIA GPU; none found (the CPU contract above runs)")
@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_method_on_the_gpu_gives_the_cpu_phase(store, dense_store, tiny_model, name):
    import torch

    if "torch" in REGISTRY[name].backends and not torch.cuda.is_available():
        pytest.skip(f"{name} runs on torch, which sees no CUDA device (install a CUDA build of torch)")
    path = dense_store if name == "gd-dense" else store
    kw = {"model": tiny_model} if name == "flowtie" else {"iterations": 4} if name in WHOLE else {}
    tiles = [None] if name in WHOLE else TILINGS
    for tile in tiles:
        cpu = reconstruct(path, get_method(name, **kw), tile_size=tile, halo=4, client="inline", progress=False)
        for client in ("inline", None):
            gpu = reconstruct(path, get_method(name, **kw), tile_size=tile, halo=4, client=client, device="gpu",
                              progress=False)
            lit = cpu.illumination > 0.05 * cpu.illumination.max()
            d = np.angle(np.exp(1j * (gpu.phase - cpu.phase)))[lit]
            assert np.abs(d - d.mean()).max() < GPU_TOLERANCE.get(name, 1e-4), (name, tile, client)


def test_a_whole_scan_method_that_does_not_fit_memory_is_refused_before_reading(store, monkeypatch):
    """The runner checks the memory a whole-scan method declares before it reads the scan."""
    import flowtie_dask.runner.whole as whole

    def no_read(*a, **k):
        raise AssertionError("the scan was read")

    monkeypatch.setattr(whole, "read_whole", no_read)
    monkeypatch.setattr("flowtie_dask.backend.available_memory", lambda device="cpu": 2**16)
    for name in WHOLE:
        with pytest.raises(ValueError, match=rf"--method {name} works on the whole scan at once and needs [\d.]+ GiB, "
                           r"more than the 0\.0 GiB available \(host, 70% usable\); crop the scan or use a tiled "
                           rf"method \(--method {', '.join(TILED)}\)"):
            method = get_method(name)
            method.check = lambda geometry: None  # the dense form's grid check is not the point here
            reconstruct(store, method, progress=False)
    # info's methods line says so too (the tiled methods need no whole-scan memory)
    from flowtie_dask.methods import methods_for
    from flowtie_dask.store import StoreHandle

    verdicts = methods_for(StoreHandle(store).geometry())
    assert verdicts["tie"] is None and verdicts["icom"] is None
    assert verdicts["gd"].startswith("the whole scan at once needs") and "crop the scan" in verdicts["gd"]


def test_the_registry_is_what_the_cli_offers():
    from flowtie_dask.cli.main import build_parser

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["reconstruct"]
    action = next(a for a in sub._actions if a.dest == "method")
    assert tuple(action.choices) == tuple(REGISTRY)
    for name, cls in REGISTRY.items():
        assert cls.summary in action.help and cls.kind in ("tile", "field", "reduce", "whole")


def test_unknown_methods_and_options_are_named():
    with pytest.raises(ValueError, match="unknown method 'dpc': use one of tie, flowtie, icom, gd, gd-dense"):
        get_method("dpc")
    with pytest.raises(ValueError, match=r"method 'icom' takes no option 'model' \(--model\)"):
        get_method("icom", model="x.pt")


# -------------------------------------------------------------------------------------- iCoM references
def test_icom_centre_of_mass_equals_a_per_pattern_loop(store):
    from flowtie_dask.geometry import ReconstructionGeometry
    from flowtie_dask.methods.icom import centre_of_mass
    from flowtie_dask.store import open_scan_store

    st = open_scan_store(store)
    geo = ReconstructionGeometry.from_metadata(st.metadata, scan_shape=st.scan_shape, detector_shape=st.detector_shape)
    data = geo.orient(np.asarray(st.intensity[1], dtype=np.float64))
    qx, qy = geo.q_vectors()
    got = centre_of_mass(data, qx, qy)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            p = data[i, j]
            want_x = np.sum(p * qx[:, None]) / np.sum(p)
            want_y = np.sum(p * qy[None, :]) / np.sum(p)
            assert got[0, i, j] == pytest.approx(want_x, rel=1e-9, abs=1e-12)
            assert got[1, i, j] == pytest.approx(want_y, rel=1e-9, abs=1e-12)


def test_icom_integration_equals_a_direct_poisson_solve():
    """Periodic: the integrated phase solves ∇²φ = ∇·g (a dense finite-difference-free check in Fourier space
    is circular, so solve the spectral Poisson equation by a direct dense linear solve on a small grid)."""
    from flowtie_dask.geometry import ReconstructionGeometry

    n, step = 8, 0.3
    rng = np.random.default_rng(3)
    phi = rng.normal(size=(n, n))
    k = np.fft.fftfreq(n, step)
    ph = np.fft.fft2(phi)
    gx = np.real(np.fft.ifft2(2j * np.pi * k[:, None] * ph))  # spectral gradient of a known phase
    gy = np.real(np.fft.ifft2(2j * np.pi * k[None, :] * ph))
    geo = ReconstructionGeometry(energy=300e3, semiangle=20.0, aperture_edge=0.0, focus_c10=0.0, aberrations={},
                                 scan_shape=(n, n), scan_step=(step, step), detector_shape=(4, 4),
                                 detector_sampling=(0.1, 0.1), detector_center=(2, 2), periodic=True,
                                 c10=(20.0, 0.0, -20.0))
    com = np.stack([gx, gy]) / (2 * np.pi)
    phase, *_ = get_method("icom").finalize({"com": com}, geo, periodic=True)
    # the direct solve: least squares over all real fields of  D φ = g  with D the spectral derivative matrix
    eye = np.eye(n * n).reshape(n * n, n, n)
    dx = np.real(np.fft.ifft2(2j * np.pi * k[:, None] * np.fft.fft2(eye, axes=(1, 2)), axes=(1, 2)))
    dy = np.real(np.fft.ifft2(2j * np.pi * k[None, :] * np.fft.fft2(eye, axes=(1, 2)), axes=(1, 2)))
    D = np.concatenate([dx.reshape(n * n, -1).T, dy.reshape(n * n, -1).T])
    sol, *_ = np.linalg.lstsq(D, np.concatenate([gx.ravel(), gy.ravel()]), rcond=None)
    sol = sol.reshape(n, n)
    # the Nyquist row/column of a real field's spectral derivative is ambiguous: compare without it
    keep = np.ones((n, n), complex)
    keep[n // 2, :] = keep[:, n // 2] = 0
    band = lambda f: np.real(np.fft.ifft2(np.fft.fft2(f - f.mean()) * keep))  # noqa: E731
    np.testing.assert_allclose(band(phase), band(sol), atol=1e-9)
    np.testing.assert_allclose(band(phase), band(phi), atol=1e-9)


def test_icom_recovers_a_weak_phase_object_better_than_a_flat_guess(store):
    from flowtie_dask.evaluate import evaluate_result

    import dataclasses

    res = reconstruct(store, get_method("icom"), progress=False)
    ev = evaluate_result(res, store)
    # this coarse scan (0.47 Å steps, 16 px detector): TIE reaches 0.57 of the truth's variance, iCoM 0.64
    assert ev["mse"] < 0.75 * ev["truth_variance"]
    # the sign convention matters (a crystal's −φ, shifted, resembles φ: the flipped phase is still clearly worse)
    flipped = evaluate_result(dataclasses.replace(res, phase=-res.phase), store)
    assert ev["mse"] < 0.8 * flipped["mse"]
    assert res.pixel_size == pytest.approx(res.attrs["scan_metadata"]["scan_step_A"])
    # a non-periodic iCoM result is on the scan grid too, and evaluate takes the scan's field of view for it
    window = reconstruct(store, get_method("icom"), periodic=False, progress=False)
    assert window.phase.shape == res.phase.shape and not window.periodic
    assert evaluate_result(window, store)["mse"] < ev["truth_variance"]


def test_info_lists_the_methods_that_accept_the_store(store, capsys, tmp_path):
    from flowtie_dask.cli.main import main

    def methods_line(path):
        assert main(["info", path]) == 0
        return [x for x in capsys.readouterr().out.splitlines() if x.startswith("methods")][0]

    line = methods_line(store)
    accepted = line.split(None, 1)[1].split(";")[0].split(", ")
    assert accepted[:3] == ["tie", "flowtie", "icom"] and "not flowtie" not in line  # inside the general model's ranges
    coarse = str(tmp_path / "coarse.zarr")  # a 1.4 Å step: 1.4 probe radii, beyond what the model was trained for
    assert main(["simulate", "GaAs", "--out", coarse, *SMALL[:2], "--scan-pixels", "4", *SMALL[4:]]) == 0
    line = methods_line(coarse)
    assert "flowtie" not in line.split(None, 1)[1].split(";")[0].split(", ")
    assert "not flowtie: the model was trained for step_probe" in line


PLUGIN = '''"""A test method: the mean in-focus intensity of every pattern."""
import numpy as np

from flowtie_dask.methods import Method, Option, register


@register
class BrightFieldMean(Method):
    name = "bf-mean"
    summary = "the mean in-focus intensity (a test method)"
    kind = "reduce"
    options = (Option("scale", "factor applied to the map", type=float),)

    def __init__(self, *, scale: float = 1.0):
        self.scale = scale

    def attrs(self):
        return {"method": self.name, "scale": self.scale}

    def reduce(self, intensity, geometry):
        return {"mean": intensity[1].mean(axis=(-2, -1))}

    def finalize(self, merged, geometry, *, periodic):
        m = self.scale * merged["mean"]
        return m, np.ones_like(m), np.ones_like(m), tuple(geometry.scan_step), (0.0, 0.0)
'''


def test_a_new_method_is_one_new_file_and_the_cli_offers_it(store, tmp_path, monkeypatch, capsys):
    """Adding a method: one new module in the methods package (here a folder added to the package's path);
    the registry, the CLI's --method and its flags, ``info``, the runner and the result attributes pick it up
    with no other edit."""
    import sys

    import flowtie_dask.methods as methods
    from flowtie_dask.cli.main import main
    from flowtie_dask.results import open_result
    from flowtie_dask.store import open_scan_store

    extra = tmp_path / "plugins"
    extra.mkdir()
    (extra / "bright_field_mean.py").write_text(PLUGIN)
    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(extra)])
    try:
        methods._register_modules()
        assert list(methods.REGISTRY)[-1] == "bf-mean"
        out = tmp_path / "bf.zarr"
        assert main(["reconstruct", store, "--method", "bf-mean", "--scale", "2", "--tile-size", "5", "--out",
                     str(out), "--no-progress"]) == 0
        res = open_result(str(out))
        want = 2 * np.asarray(open_scan_store(store).intensity[1], dtype=np.float64).mean(axis=(-2, -1))
        np.testing.assert_allclose(res.phase, want, rtol=1e-6)
        assert res.attrs["method"] == "bf-mean" and res.attrs["scale"] == 2.0 and res.attrs["n_tiles"] == 9
        capsys.readouterr()
        assert main(["info", store]) == 0
        line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("methods")][0]
        assert "bf-mean" in line.split(";")[0]
    finally:
        methods.REGISTRY.pop("bf-mean", None)
        sys.modules.pop("flowtie_dask.methods.bright_field_mean", None)

import os

os.environ.setdefault("CUPY_PYLOPS", "0")  # py4DSTEM imports pylops, which probes CuPy at import

import numpy as np
import pytest

from flowtie_dask.backend import cupy_available

# Data simulated by abTEM 1.0.11 (not our code), vendored from ../shared/data/external so CI has it.
EXTERNAL = os.environ.get(
    "FLOWTIE_EXTERNAL_DATA", os.path.join(os.path.dirname(__file__), "data", "external", "mgo_200kV")
)

requires_gpu = pytest.mark.skipif(not cupy_available(), reason="needs CuPy and an NVIDIA GPU; none found here")


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny tensors: intra-op threads only add overhead (and stall badly on a busy 2-core runner)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def gaas16(tmp_path_factory):
    """A tiny simulated GaAs series (1 cell, 16×16 positions × 16×16 detector), shared read-only: tests that
    change a store copy it first."""
    from flowtie_dask.cli.main import main

    path = tmp_path_factory.mktemp("gaas16") / "g.zarr"
    assert main(["simulate", "GaAs", "--out", str(path), "--lateral-cells", "1", "--scan-pixels", "16",
                 "--detector-pixels", "16", "--gpts", "24", "--no-progress", "--workers", "0"]) == 0
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def weak_phase_object(n=64, pixel=0.2, max_phase=0.3, seed=0, smooth=0.8):
    """A smooth random phase object with phases in [0, max_phase] (DESIGN §6)."""
    r = np.random.default_rng(seed)
    ph = r.standard_normal((n, n))
    k = np.fft.fftfreq(n, pixel)
    k2 = k[:, None] ** 2 + k[None] ** 2
    ph = np.real(np.fft.ifft2(np.fft.fft2(ph) * np.exp(-k2 / (2 * smooth**2))))
    ph -= ph.min()
    return ph * (max_phase / ph.max())


def weak_object_series(n=64, step=0.2, *, scan_step=None, max_phase=0.3, seed=0, detector=None):
    """A single-slice weak phase object simulated with the multislice kernel (no band limit).

    Returns
    -------
    intensity : (3, Rx, Ry, Qx, Qy) float32, C10 = +20, 0, −20 Å (Δf = −20, 0, +20)
    probe_frame : (Rx, Ry, Qx, Qy) complex64, Ψ at focus
    obj : (n, n) phase in rad
    geometry : ReconstructionGeometry (periodic)
    """
    from flowtie_dask.geometry import ReconstructionGeometry
    from flowtie_dask.physics import Aberrations, probe_fourier
    from flowtie_dask.simulate.multislice import simulate_positions

    scan_step = step if scan_step is None else scan_step
    detector = n if detector is None else detector
    samp = (step, step)
    obj = weak_phase_object(n, step, max_phase, seed=seed)
    tr = np.exp(1j * obj)[None, None].astype(np.complex64)
    prop = np.ones((n, n), np.complex64)
    c10 = (20.0, 0.0, -20.0)
    probes = np.stack([probe_fourier((n, n), samp, energy=300e3, semiangle=20, aberrations=Aberrations(C10=c))
                       for c in c10])
    rs = int(round(n * step / scan_step))
    ix, iy = np.meshgrid(np.arange(rs), np.arange(rs), indexing="ij")
    pos = np.stack([ix.ravel(), iy.ravel()], 1) * scan_step
    inten, pf = simulate_positions(pos, probes=probes, transmissions=tr, propagator=prop, sampling=samp,
                                   detector_shape=(detector, detector), probe_frame_index=1)
    geometry = ReconstructionGeometry(
        energy=300e3, semiangle=20.0, aperture_edge=0.0, focus_c10=0.0, aberrations={}, scan_shape=(rs, rs),
        scan_step=(scan_step, scan_step), detector_shape=(detector, detector),
        detector_sampling=(1 / (n * step),) * 2, detector_center=(detector // 2, detector // 2), periodic=True,
        c10=c10)
    shape = (3, rs, rs, detector, detector)
    return inten.reshape(shape), pf.reshape(shape[1:]), obj, geometry


def design_mse(a, b):
    """DESIGN §4: mean of ((a − mean a) − (b − mean b))², rad²."""
    d = (a - a.mean()) - (b - b.mean())
    return float(np.mean(d**2))

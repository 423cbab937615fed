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

import numpy as np
import pytest

from flowtie_dask.simulate.multislice import poisson_noise


def noisy(patterns, electrons, seed=0):
    """Poisson counts at ``electrons`` per (unit-sum) pattern, on the same scale (the project's shot noise)."""
    flat = np.asarray(patterns, dtype=np.float32).reshape((-1,) + patterns.shape[-2:])
    keys = np.arange(flat.shape[0])[:, None]
    return np.asarray(poisson_noise(flat, electrons=electrons, seed=seed, keys=keys)).reshape(patterns.shape)


@pytest.fixture(scope="session")
def clean():
    """The noise-free GaAs series, scans on one grid: (3, 48, 48, 64, 64) and its plan."""
    from .synthetic import clean_series

    return clean_series()

"""The dose a store's data carry (:func:`electrons_per_pattern`), for the methods that weigh shot noise."""

from __future__ import annotations

import numpy as np

from .layout import intensity_scale

__all__ = ["electrons_per_pattern"]


def electrons_per_pattern(store) -> float:
    """Mean electrons per pattern of the focus scan: the mean pattern sum of a store of integer counts (as
    ``import`` measured it, else 1/scale; counts taken as electrons, as a counting detector gives them), else
    the ``electrons_per_pattern`` a simulation with shot noise recorded in its provenance; 0 when neither
    (noise-free, or unknown).

    Parameters
    ----------
    store : ScanStore

    Returns
    -------
    float
        e⁻ per pattern (≥ 0).
    """
    prov = store.metadata.provenance or {}
    scale = intensity_scale(store.intensity)
    if scale is not None and np.dtype(store.intensity.dtype).kind in "ui":  # integer counts (floats: no telling)
        focus = int(np.argsort(np.asarray(store.metadata.c10, dtype=float), kind="stable")[1])  # as focus_index
        means = prov.get("mean_counts_per_pattern")  # as import measured it (a scale given by the user may differ)
        try:
            value = float(means[focus])
        except (TypeError, ValueError, IndexError, KeyError):
            value = float(1.0 / scale[focus])
        return value if np.isfinite(value) and value > 0 else float(1.0 / scale[focus])
    value = prov.get("electrons_per_pattern")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return value if np.isfinite(value) and value > 0 else 0.0

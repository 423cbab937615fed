"""FlowTIE networks and losses (torch): see :mod:`.architectures` and :mod:`.losses`.

The names below are imported lazily (on first attribute access), so importing a sibling module such as
``flowtie_dask.model.dataset`` does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FlowPredictorModel": "architectures",
    "SharedFlowModel": "architectures",
    "DimensionlessFlowModel": "dimensionless",
    "DoseAwareFlowModel": "dimensionless",
    "build_model": "registry",
    "MODEL_CLASSES": "registry",
    "wrap": "losses",
    "forward_difference_target": "losses",
    "intensity_weight": "losses",
    "vector_field_loss": "losses",
    "continuity_residual": "losses",
    "continuity_loss": "losses",
    "integrate_forward": "losses",
    "phase_loss": "losses",
    "flowtie_loss": "losses",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)

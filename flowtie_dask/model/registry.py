"""The FlowTIE network classes a checkpoint may name, and :func:`build_model` to rebuild one from its record."""

from __future__ import annotations

from typing import Any

from torch import nn

from .architectures import FlowPredictorModel, SharedFlowModel
from .dimensionless import DimensionlessFlowModel, DoseAwareFlowModel

__all__ = ["MODEL_CLASSES", "build_model"]

MODEL_CLASSES = {cls.__name__: cls for cls in (FlowPredictorModel, SharedFlowModel, DimensionlessFlowModel,
                                                    DoseAwareFlowModel)}


def build_model(config: dict[str, Any]) -> nn.Module:
    """Rebuild a model from its ``config()`` (weights are loaded separately with ``load_state_dict``).

    Parameters
    ----------
    config : dict
        ``{"name": class name, **constructor kwargs}`` as ``config()`` writes it (name in
        :data:`MODEL_CLASSES`); ``{"class": name, "kwargs": {...}}`` is accepted too.

    Returns
    -------
    torch.nn.Module
    """
    config = dict(config)
    name = config.pop("name", None) or config.pop("class", None)
    if name not in MODEL_CLASSES:
        raise ValueError(f"unknown model class {name!r}; known: {sorted(MODEL_CLASSES)}")
    kwargs = dict(config.pop("kwargs", {}) or {})
    kwargs.update(config)
    return MODEL_CLASSES[name](**kwargs)

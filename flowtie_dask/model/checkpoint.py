"""FlowTIE checkpoints: weights plus a JSON-able record of the architecture, the optics and sampling the
model was trained for, the training configuration and the package version.

Checkpoints are read with ``torch.load(weights_only=True)``: a file that needs pickled code to load is
refused. A model is used on a scan only when the scan's optics and sampling match its record.
"""

from __future__ import annotations

import json
import os

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "optics_record", "check_compatible",
           "default_model_path"]

FORMAT = "flowtie-dask/checkpoint"


class CheckpointError(ValueError):
    """A checkpoint is unreadable, unsafe, or does not fit the scan (one-line message)."""


def optics_record(geometries) -> dict:
    """What a model depends on, from one or several :class:`~flowtie_dask.geometry.ReconstructionGeometry`.

    Returns
    -------
    dict
        ``energy_eV``, ``semiangle_mrad``, ``defocus_step_A`` (half the C10 span) of the first geometry, and
        the ranges ``scan_step_A`` = [min, max] and ``detector_sampling_invA`` = [min, max] over all of them.
    """
    geos = list(geometries) if isinstance(geometries, (list, tuple)) else [geometries]
    g = geos[0]

    def dz(geo):
        c10 = sorted(geo.c10)
        return float((c10[2] - c10[0]) / 2)

    steps = [float(v) for geo in geos for v in geo.scan_step]
    dqs = [float(v) for geo in geos for v in geo.detector_sampling]
    return {
        "energy_eV": float(g.energy),
        "semiangle_mrad": float(g.semiangle),
        "defocus_step_A": dz(g),
        "scan_step_A": [min(steps), max(steps)],
        "detector_sampling_invA": [min(dqs), max(dqs)],
    }


def check_compatible(record: dict, geometry, *, tolerance: float = 0.1) -> None:
    """Raise :class:`CheckpointError` unless the scan's optics and sampling match the model's record.

    Energy must match to 1 %, the semi-angle and defocus step to ``tolerance`` (relative); the scan step
    and the detector sampling must lie within the trained ranges widened by ``tolerance``.
    """
    here = optics_record(geometry)
    for key, tol, unit in (("energy_eV", 0.01, "eV"), ("semiangle_mrad", tolerance, "mrad"),
                           ("defocus_step_A", tolerance, "Å")):
        if key in record and abs(here[key] - record[key]) > tol * abs(record[key]):
            raise CheckpointError(
                f"the model was trained for {key} = {record[key]:g} {unit}, this scan has {here[key]:g} {unit}: "
                "train a model for these optics ('flowtie-dask train') or use --method tie")
    for key, unit in (("scan_step_A", "Å"), ("detector_sampling_invA", "1/Å")):
        if key not in record:
            continue
        lo, hi = record[key]
        if here[key][0] < lo * (1 - tolerance) or here[key][1] > hi * (1 + tolerance):
            raise CheckpointError(
                f"the model was trained for {key} in [{lo:.4g}, {hi:.4g}] {unit}, this scan has "
                f"{here[key][0]:.4g}…{here[key][1]:.4g} {unit}: train a model for this sampling "
                "('flowtie-dask train') or use --method tie")


def save_checkpoint(path: str, *, model, meta: dict, optimizer=None) -> str:
    """Write weights and a JSON-able ``meta`` record atomically.

    Parameters
    ----------
    path : str
        ``*.pt`` file.
    model : torch.nn.Module
        Must provide ``config()`` (see :mod:`flowtie_dask.model.architectures`).
    meta : dict
        JSON-able: optics, training configuration, history, epoch …
    optimizer : torch.optim.Optimizer, optional
        Saved for ``--resume``.

    Returns
    -------
    str
    """
    import torch

    from .. import __version__
    from ..atomic import atomic_path

    record = {"format": FORMAT, "version": __version__, "architecture": model.config(), **meta}
    json.dumps(record)  # refuse anything that is not plain data

    def on_cpu(obj):  # a checkpoint written on a GPU must load on any machine
        if isinstance(obj, torch.Tensor):
            return obj.detach().cpu()
        if isinstance(obj, dict):
            return {k: on_cpu(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(on_cpu(v) for v in obj)
        return obj

    payload = {"meta_json": json.dumps(record), "state_dict": on_cpu(model.state_dict())}
    if optimizer is not None:
        payload["optimizer"] = on_cpu(optimizer.state_dict())
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(payload, tmp)
    return os.path.abspath(path)


def load_checkpoint(path: str, *, map_location: str = "cpu"):
    """Load a checkpoint safely (``weights_only=True``) and rebuild its model.

    Returns
    -------
    model : torch.nn.Module
        In eval mode, on ``map_location``.
    meta : dict
    payload : dict
        The raw payload (``state_dict``, ``optimizer`` …) for resuming.

    Raises
    ------
    CheckpointError
        Missing file, pickled code, or not a flowtie-dask checkpoint.
    """
    import pickle

    import torch

    from .architectures import build_model

    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path!r} needs pickled code to load and was refused (weights_only=True); "
                              "use a checkpoint written by 'flowtie-dask train'") from None
    except Exception as exc:
        raise CheckpointError(f"{path!r} is not a readable torch checkpoint: {type(exc).__name__}") from None
    if not isinstance(payload, dict) or "meta_json" not in payload or "state_dict" not in payload:
        raise CheckpointError(f"{path!r} is not a flowtie-dask checkpoint (no meta_json/state_dict)")
    meta = json.loads(payload["meta_json"])
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a flowtie-dask checkpoint (format {meta.get('format')!r})")
    model = build_model(meta["architecture"])
    model.load_state_dict(payload["state_dict"])
    model.to(map_location).eval()
    return model, meta, payload


def default_model_path() -> str:
    """Path of the pretrained model shipped in the package (may not exist in a development tree)."""
    from importlib import resources

    return str(resources.files("flowtie_dask.model").joinpath("pretrained/flowtie_default.pt"))



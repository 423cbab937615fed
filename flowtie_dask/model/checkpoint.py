"""FlowTIE checkpoints: weights plus a JSON-able record of the architecture, the optics and sampling the
model was trained for, the training configuration and the package version.

Checkpoints are read with ``torch.load(weights_only=True)``: a file that needs pickled code to load is
refused. Before a model is built its architecture record is checked (known class, known argument names of
the right types, sizes and parameter count within bounds), then the weights' names and shapes are compared
with the model and every floating-point tensor must be finite. A model is used on a scan only when the
scan's optics and sampling match its record, and a checkpoint without an optics record is not used.
The checks themselves are in :mod:`flowtie_dask.model.validation` (re-exported here).
"""

from __future__ import annotations

import errno
import json
import os

from ..atomic import atomic_path
from .validation import (  # noqa: F401  (re-exported: the names lived here before model.validation)
    _RETRAIN,
    ARGUMENT_BOUNDS,
    MAX_PARAMETERS,
    OPTICS_KEYS,
    CheckpointError,
    _check_optics_record,
    _check_state,
    _int_like,
    check_architecture,
    check_compatible,
    check_weights,
    dimensionless_record,
    optics_record,
)

__all__ = ["CheckpointError", "SHIPPED_MODELS", "DEFAULT_MODEL", "shipped_model", "save_checkpoint", "load_checkpoint", "optics_record", "dimensionless_record",
           "check_compatible",
           "check_architecture", "default_model_path", "MAX_PARAMETERS", "ARGUMENT_BOUNDS", "OPTICS_KEYS"]

FORMAT = "flowtie-dask/checkpoint"


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def _open_for_writing(path: str):
    """The file a checkpoint's bytes go to (a seam for tests of a full disk)."""
    return open(path, "wb")


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

    Raises
    ------
    CheckpointError
        The disk (or quota) is full: one line naming ``path``; an earlier file at ``path`` is left as it was.
    """
    import io

    import torch

    from .. import __version__

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
    # serialised in memory, written with Python's file I/O: a full disk surfaces as OSError(ENOSPC)
    # (torch's own zip writer reports it as an unspecific RuntimeError)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    try:
        with atomic_path(path, overwrite=True) as tmp:
            with _open_for_writing(tmp) as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise CheckpointError(
                f"the disk is full: the checkpoint {os.path.abspath(path)!r} ({_size(buffer.tell())}) could "
                "not be written (an earlier one there is unchanged); free space or choose another --out") from None
        raise
    return os.path.abspath(path)


def _is_torch_file(path: str) -> bool:
    """Whether the file has the layout torch.save writes (a zip with data.pkl, or the legacy magic number)."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                return any(n.endswith("/data.pkl") or n == "data.pkl" for n in z.namelist())
        with open(path, "rb") as f:
            return f.read(14) == b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"
    except (OSError, zipfile.BadZipFile):
        return False


def _read_meta(text, path: str) -> dict:
    if not isinstance(text, str):
        raise CheckpointError(f"{path!r} is not a flowtie-dask checkpoint (its meta_json is not text)")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path!r}: its meta_json record is not valid JSON (line {exc.lineno} column "
                              f"{exc.colno}): {exc.msg}; {_RETRAIN}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path!r} is not a flowtie-dask checkpoint (its meta_json is not a JSON object)")
    return meta


def load_checkpoint(path: str, *, map_location: str = "cpu"):
    """Load a checkpoint safely (``weights_only=True``) and rebuild its model.

    The architecture record is checked (:func:`check_architecture`) before any model is built, the
    weights' names and shapes must be those of the model, and every floating-point tensor finite.

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
        Missing file, not a torch file, pickled code, not a flowtie-dask checkpoint, a bad architecture
        record, weights that do not fit it, or non-finite weights (one line each).
    """
    import pickle
    import warnings

    import torch

    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        torch_file = _is_torch_file(path)
        if torch_file and isinstance(exc, pickle.UnpicklingError) and "GLOBAL" in str(exc):
            raise CheckpointError(f"{path!r} needs pickled code to load and was refused (weights_only=True); "
                                  "use a checkpoint written by 'flowtie-dask train'") from None
        if torch_file:
            raise CheckpointError(f"{path!r} is a torch file that could not be read (truncated or damaged: "
                                  f"{type(exc).__name__}); use a checkpoint written by 'flowtie-dask train'") from None
        raise CheckpointError(f"{path!r} is not a flowtie-dask checkpoint (could not be read as a torch file); "
                              "give a *.pt file written by 'flowtie-dask train'") from None
    if not isinstance(payload, dict) or "meta_json" not in payload or "state_dict" not in payload:
        raise CheckpointError(f"{path!r} is not a flowtie-dask checkpoint (no meta_json/state_dict)")
    meta = _read_meta(payload["meta_json"], path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a flowtie-dask checkpoint (format {meta.get('format')!r})")
    state = payload["state_dict"]
    _check_state(state, repr(path))
    cls, kwargs = check_architecture(meta.get("architecture"), source=repr(path))
    check_weights(state, cls, kwargs, source=repr(path))
    model = cls(**kwargs)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied
        raise CheckpointError(f"{path!r}: the weights could not be loaded into its {cls.__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    model.to(map_location).eval()
    return model, meta, payload


#: Models shipped in the package, by name: the default, trained across optics (``general``), and the model of the
#: paper's single setting, 300 kV / 20 mrad / ±20 Å (``paper-64``, kept for Table 1).
SHIPPED_MODELS = {"general": "pretrained/general.pt", "paper-64": "pretrained/paper-64.pt"}
DEFAULT_MODEL = "general"


def shipped_model(name_or_path: str) -> str:
    """The file of a shipped model given by name (:data:`SHIPPED_MODELS`), or the argument itself (a path)."""
    from importlib import resources

    if name_or_path in SHIPPED_MODELS:
        return str(resources.files("flowtie_dask.model").joinpath(SHIPPED_MODELS[name_or_path]))
    return name_or_path


def default_model_path() -> str:
    """Path of the default pretrained model shipped in the package (may not exist in a development tree)."""
    return shipped_model(DEFAULT_MODEL)



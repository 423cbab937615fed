"""Validation of FlowTIE checkpoint records: the optics a model was trained for, its architecture record
and its weights, each refused with a one-line :class:`CheckpointError` before anything is built or used.

* :func:`optics_record` / :func:`check_compatible` — the optics and sampling of a scan against the model's;
* :func:`check_architecture` — known class, known argument names of the right types, sizes and parameter
  count within bounds (:data:`ARGUMENT_BOUNDS`, :data:`MAX_PARAMETERS`);
* :func:`check_weights` — weight names and shapes against the architecture, every tensor finite.

Reading and writing checkpoints is :mod:`flowtie_dask.model.checkpoint`, which re-exports these names.
Torch is imported only inside :func:`check_weights`.
"""

from __future__ import annotations

import math

from .optics_groups import dimensionless_groups, optics_inputs

__all__ = ["CheckpointError", "optics_record", "dimensionless_record", "GROUPS", "check_compatible", "check_architecture", "check_weights",
           "MAX_PARAMETERS", "ARGUMENT_BOUNDS", "OPTICS_KEYS"]

#: A checkpoint whose architecture record asks for more trainable parameters than this is refused
#: before any model is built (1e8 float32 parameters = 400 MB; the shipped model has ~20 000).
MAX_PARAMETERS = 100_000_000

#: Upper bounds of the integer constructor arguments a checkpoint may ask for (all must be ≥ 1).
ARGUMENT_BOUNDS = {"hidden": 1024, "depth": 64, "kernel_size": 15, "n_pixels": 1 << 20}

#: The keys of an optics record (:func:`optics_record`); all are needed to check a scan against a model.
OPTICS_KEYS = ("energy_eV", "semiangle_mrad", "defocus_step_A", "scan_step_A", "detector_sampling_invA")

_RETRAIN = "retrain or re-save it with 'flowtie-dask train'"


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


#: The quantities a dimensionless model's record gives ranges of, what each means, and the slack of the check
#: (relative to the range's width and its upper end): a scan inside [lo − slack, hi + slack] is accepted.
GROUPS = {
    "step_probe": "the scan step against the probe size, step·α/λ",
    "defocus_phase": "the defocus step as the phase it adds at the aperture edge over π, Δz·α²/λ",
    "cs_phase": "C30's phase at the aperture edge, C30·α⁴/2λ (rad)",
    "pixel_aperture": "the detector pixel in units of the aperture, Δq·λ/α",
    "edge_aperture": "the aperture edge width against the semi-angle",
    "step_ratio": "the ratio of the two scan steps",
    "energy_kV": "the beam energy in kV (it sets how strongly the specimen scatters)",
}
_SLACK = 0.05


def dimensionless_record(geometries, *, dose=None) -> dict:
    """The trained ranges of a :class:`~flowtie_dask.model.dimensionless.DimensionlessFlowModel`.

    Parameters
    ----------
    geometries : ReconstructionGeometry or list of them
        The training stores'.
    dose : [low, high] or None
        e⁻ per pattern of the training noise (recorded, not checked: a store does not know its dose).

    Returns
    -------
    dict
        ``{"kind": "dimensionless", "ranges": {group: [min, max]}, "dose_per_pattern": dose}`` with the groups of
        :data:`GROUPS` (dimensionless, except the energy).
    """
    geos = list(geometries) if isinstance(geometries, (list, tuple)) else [geometries]
    values = [{**dimensionless_groups(optics_inputs(g)), "energy_kV": float(g.energy) / 1e3} for g in geos]
    ranges = {k: [min(v[k] for v in values), max(v[k] for v in values)] for k in GROUPS}
    return {"kind": "dimensionless", "ranges": ranges, "dose_per_pattern": list(dose) if dose else None}


def _check_dimensionless(record: dict, geometry, source: str) -> None:
    ranges = record.get("ranges")
    if not isinstance(ranges, dict):
        raise CheckpointError(f"{source}: its dimensionless optics record has no 'ranges' mapping; {_RETRAIN}")
    if set(GROUPS) - set(ranges):
        raise CheckpointError(f"{source}: its dimensionless optics record lacks "
                              f"{', '.join(sorted(set(GROUPS) - set(ranges)))}; {_RETRAIN}")
    here = {**dimensionless_groups(optics_inputs(geometry)), "energy_kV": float(geometry.energy) / 1e3}
    for key, meaning in GROUPS.items():
        try:
            lo, hi = (float(v) for v in ranges[key])
        except (TypeError, ValueError):
            raise CheckpointError(f"{source}: optics range {key} = {ranges[key]!r} is not [low, high]; "
                                  f"{_RETRAIN}") from None
        slack = _SLACK * max(hi - lo, abs(hi), 1e-3 if key == "cs_phase" else 0.0)
        if not lo - slack <= here[key] <= hi + slack:
            raise CheckpointError(
                f"the model was trained for {key} ({meaning}) in [{lo:.4g}, {hi:.4g}], this scan has "
                f"{here[key]:.4g}: train a model for these optics ('flowtie-dask train') or use --method tie")


def _check_optics_record(record, source: str) -> dict:
    """The record with its five values as floats; :class:`CheckpointError` when it is missing or malformed."""
    if not record:
        raise CheckpointError(f"{source} has no optics record; it cannot be checked against the scan: {_RETRAIN}")
    if not isinstance(record, dict):
        raise CheckpointError(f"{source}: its optics record is not a mapping ({type(record).__name__}); {_RETRAIN}")
    missing = [k for k in OPTICS_KEYS if k not in record]
    if missing:
        raise CheckpointError(f"{source}: its optics record lacks {', '.join(missing)}; it cannot be checked "
                              f"against the scan: {_RETRAIN}")
    out = {}
    for key in OPTICS_KEYS:
        value = record[key]
        ranged = key in ("scan_step_A", "detector_sampling_invA")
        try:
            if ranged:
                if isinstance(value, (str, bytes)) or len(value) != 2:
                    raise TypeError
                v = [float(x) for x in value]
                ok = all(math.isfinite(x) and x > 0 for x in v) and v[0] <= v[1]
            else:
                if isinstance(value, bool):
                    raise TypeError
                v = float(value)
                ok = math.isfinite(v) and (v > 0 or key == "defocus_step_A" and v >= 0)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            want = "[min, max] of positive numbers" if ranged else "a positive number"
            raise CheckpointError(f"{source}: optics record {key} = {value!r} is not {want}; {_RETRAIN}")
        out[key] = v
    return out


def check_compatible(record: dict, geometry, *, tolerance: float = 0.1, source: str = "the checkpoint") -> None:
    """Raise :class:`CheckpointError` unless the scan's optics and sampling match the model's record.

    A dimensionless record (:func:`dimensionless_record`) is checked group by group: each of :data:`GROUPS` must
    lie in its trained range widened by 5 % of the range's width or its upper end, whichever is larger, and
    the message names the group that does not. Otherwise (a record of one optical setting):
    Energy must match to 1 %, the semi-angle and defocus step to ``tolerance`` (relative); the scan step
    and the detector sampling must lie within the trained ranges widened by ``tolerance``. A missing,
    empty or incomplete record is refused (nothing could be checked); ``source`` names the checkpoint in
    that message.
    """
    if isinstance(record, dict) and record.get("kind") == "dimensionless":
        return _check_dimensionless(record, geometry, source)
    record = _check_optics_record(record, source)
    here = optics_record(geometry)
    for key, tol, unit in (("energy_eV", 0.01, "eV"), ("semiangle_mrad", tolerance, "mrad"),
                           ("defocus_step_A", tolerance, "Å")):
        if abs(here[key] - record[key]) > tol * abs(record[key]):
            raise CheckpointError(
                f"the model was trained for {key} = {record[key]:g} {unit}, this scan has {here[key]:g} {unit}: "
                "train a model for these optics ('flowtie-dask train') or use --method tie")
    for key, unit in (("scan_step_A", "Å"), ("detector_sampling_invA", "1/Å")):
        lo, hi = record[key]
        if here[key][0] < lo * (1 - tolerance) or here[key][1] > hi * (1 + tolerance):
            raise CheckpointError(
                f"the model was trained for {key} in [{lo:.4g}, {hi:.4g}] {unit}, this scan has "
                f"{here[key][0]:.4g}…{here[key][1]:.4g} {unit}: train a model for this sampling "
                "('flowtie-dask train') or use --method tie")


def _int_like(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_architecture(config, *, source: str = "the checkpoint") -> tuple[type, dict]:
    """Check an architecture record before any model is built.

    The class must be one of :data:`~flowtie_dask.model.registry.MODEL_CLASSES`, every argument a
    constructor argument of the annotated type (integers ≥ 1 and within :data:`ARGUMENT_BOUNDS`,
    booleans, a known padding mode), required arguments present, odd kernel sizes, and the class's
    ``count_parameters`` at most :data:`MAX_PARAMETERS`.

    Returns
    -------
    cls : type
    kwargs : dict
        The constructor arguments.

    Raises
    ------
    CheckpointError
        One line naming ``source``, the argument and what is wrong.
    """
    import inspect

    from .architectures import _PADDING_MODES
    from .registry import MODEL_CLASSES

    if config is None:
        raise CheckpointError(f"{source} has no architecture record; {_RETRAIN}")
    if not isinstance(config, dict):
        raise CheckpointError(f"{source}: its architecture record is not a mapping ({type(config).__name__}); "
                              f"{_RETRAIN}")
    config = dict(config)
    name = config.pop("name", None) or config.pop("class", None)
    if not isinstance(name, str) or name not in MODEL_CLASSES:
        raise CheckpointError(f"{source}: unknown architecture {name!r} (known: {', '.join(sorted(MODEL_CLASSES))}); "
                              f"{_RETRAIN}")
    kwargs = config.pop("kwargs", None) or {}
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{source}: architecture kwargs must be a mapping, got {type(kwargs).__name__}")
    kwargs = {**kwargs, **config}
    cls = MODEL_CLASSES[name]
    params = {k: v for k, v in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise CheckpointError(f"{source}: unknown {name} argument{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(map(repr, unknown))} (known: {', '.join(params)}); {_RETRAIN}")
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in kwargs]
    if missing:
        raise CheckpointError(f"{source}: the {name} record lacks {', '.join(missing)}; {_RETRAIN}")
    for key, value in kwargs.items():
        kind = str(params[key].annotation)
        if kind == "int":
            if not _int_like(value):
                raise CheckpointError(f"{source}: {name} argument {key} = {value!r} is not an integer; {_RETRAIN}")
            bound = ARGUMENT_BOUNDS.get(key, 1 << 20)
            if not 1 <= value <= bound:
                raise CheckpointError(f"{source}: {name} argument {key} = {value} is outside 1…{bound}; "
                                      f"{_RETRAIN}")
        elif kind == "bool":
            if not isinstance(value, bool):
                raise CheckpointError(f"{source}: {name} argument {key} = {value!r} is not true/false; {_RETRAIN}")
        elif key == "padding_mode":
            if value not in _PADDING_MODES:
                raise CheckpointError(f"{source}: {name} argument padding_mode = {value!r} is not one of "
                                      f"{', '.join(_PADDING_MODES)}; {_RETRAIN}")
    if "kernel_size" in kwargs and kwargs["kernel_size"] % 2 != 1:
        raise CheckpointError(f"{source}: {name} argument kernel_size = {kwargs['kernel_size']} is not odd; "
                              f"{_RETRAIN}")
    if name in ("SharedFlowModel", "DimensionlessFlowModel", "DoseAwareFlowModel") and kwargs.get("depth", 2) < 2:
        raise CheckpointError(f"{source}: {name} argument depth = {kwargs['depth']} is below 2; {_RETRAIN}")
    counted = {k: v for k, v in kwargs.items()
               if k in inspect.signature(cls.count_parameters).parameters}
    n = cls.count_parameters(**counted)
    if n > MAX_PARAMETERS:
        raise CheckpointError(f"{source}: its architecture ({name} with "
                              f"{', '.join(f'{k}={v}' for k, v in counted.items())}) would have {n:.3g} parameters, "
                              f"more than the {MAX_PARAMETERS:.0e} a flowtie-dask checkpoint may ask for; it was not "
                              "built")
    return cls, kwargs


def _check_state(state, source: str) -> None:
    """:class:`CheckpointError` unless ``state`` maps names (str) to tensors."""
    import torch

    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{source}: its state_dict is not a mapping of names to tensors; {_RETRAIN}")


def check_weights(state, cls: type, kwargs: dict, *, source: str = "the checkpoint") -> None:
    """Check a checkpoint's weights against its (checked) architecture before they are loaded.

    ``state`` must map names to tensors; the names and shapes must be those of ``cls(**kwargs)``
    (built on the meta device, allocating nothing), and every floating-point or complex tensor finite.

    Raises
    ------
    CheckpointError
        One line naming ``source`` and the first weight that is wrong.
    """
    import torch

    _check_state(state, source)
    try:
        with torch.device("meta"):  # names and shapes first, without allocating anything
            expected = {k: tuple(v.shape) for k, v in cls(**kwargs).state_dict().items()}
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: its architecture record is not usable: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; {_RETRAIN}") from None
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        if wrong:
            k = wrong[0]
            what = f"weight {k!r} has shape {tuple(state[k].shape)}, the architecture needs {expected[k]}"
        elif missing:
            what = f"weight {missing[0]!r} is missing" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        else:
            what = f"weight {unexpected[0]!r} is not part of the model" + (
                f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
        raise CheckpointError(f"{source}: the weights do not fit its architecture record ({cls.__name__}): {what}; "
                              f"{_RETRAIN}")
    for k, v in state.items():
        if v.is_floating_point() or v.is_complex():
            bad = int((~torch.isfinite(v)).sum())
            if bad:
                raise CheckpointError(f"{source}: weight {k!r} has {bad} non-finite value{'s' if bad > 1 else ''} "
                                      f"(NaN or Inf) of {v.numel()}; the model is unusable: retrain it or use an "
                                      "earlier checkpoint")

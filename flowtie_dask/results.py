"""Reconstruction results on disk: a Zarr group with ``phase``, ``amplitude`` and ``illumination``, its
pixel size, origin, method and provenance, plus a PNG preview (``preview.png`` inside the group).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from .atomic import atomic_path, check_output

__all__ = ["RESULT_SCHEMA", "ReconstructionResult", "write_result", "open_result", "save_preview"]

RESULT_SCHEMA = "flowtie-dask/result"


@dataclass
class ReconstructionResult:
    """A stitched object.

    Attributes
    ----------
    phase : ndarray, shape (Nx, Ny)
        Projected phase arg O (unwrapped where it exceeds ±π), rad.
    amplitude : ndarray, shape (Nx, Ny)
        |O|.
    illumination : ndarray, shape (Nx, Ny)
        Σ_r̂ |P(r − r̂)|² (unit-norm probe).
    pixel_size : (float, float)
        Å.
    origin : (float, float)
        Position of pixel (0, 0) relative to the first scan position, Å.
    periodic : bool
        The object is one period of a periodic specimen.
    attrs : dict
        Method, parameters, provenance and timings.
    """

    phase: np.ndarray
    amplitude: np.ndarray
    illumination: np.ndarray
    pixel_size: tuple[float, float]
    origin: tuple[float, float]
    periodic: bool
    attrs: dict = field(default_factory=dict)


def _jsonable(x):
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def save_preview(result: ReconstructionResult, path: str, *, title: str | None = None) -> str:
    """PNG of phase, amplitude and illumination with a scale in Å.

    Parameters
    ----------
    result : ReconstructionResult
    path : str
        Output PNG.

    Returns
    -------
    str
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    nx, ny = result.phase.shape
    extent = [result.origin[0], result.origin[0] + nx * result.pixel_size[0],
              result.origin[1], result.origin[1] + ny * result.pixel_size[1]]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, data, name, cmap in zip(axes, (result.phase, result.amplitude, result.illumination),
                                    ("phase (rad)", "amplitude", "illumination Σ|P|²"),
                                    ("viridis", "gray", "magma")):
        im = ax.imshow(data.T, origin="lower", extent=extent, cmap=cmap)
        ax.set_title(name)
        ax.set_xlabel("x (Å)")
        ax.set_ylabel("y (Å)")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(title or f"flowtie-dask {result.attrs.get('method', '')} reconstruction")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_result(result: ReconstructionResult, out: str, *, overwrite: bool = False, preview: bool = True) -> str:
    """Write a result group atomically (no partial output survives a failure).

    Parameters
    ----------
    result : ReconstructionResult
    out : str
        Destination folder (``*.zarr``).
    overwrite : bool
    preview : bool
        Also write ``preview.png`` inside the group.

    Returns
    -------
    str
        Absolute path of the result.
    """
    import zarr

    out = check_output(out, overwrite=overwrite)
    with atomic_path(out, overwrite=overwrite) as tmp:
        g = zarr.open_group(tmp, mode="w-", zarr_format=3)
        for name in ("phase", "amplitude", "illumination"):
            arr = g.create_array(name, data=np.asarray(getattr(result, name), dtype=np.float32),
                                 dimension_names=("x", "y"))
            arr.attrs["units"] = {"phase": "rad", "amplitude": "1", "illumination": "Σ|P|² (unit-norm probe)"}[name]
        g.attrs.update(_jsonable({
            "schema": RESULT_SCHEMA,
            "schema_version": 1,
            "pixel_size_A": list(result.pixel_size),
            "origin_A": list(result.origin),
            "origin_reference": "first scan position",
            "periodic": result.periodic,
            **result.attrs,
        }))
        if preview:
            save_preview(result, os.path.join(tmp, "preview.png"))
    return out


def open_result(path: str) -> ReconstructionResult:
    """Read a result group written by :func:`write_result`.

    Raises
    ------
    ValueError
        One line when the path is missing or not a result.
    """
    import zarr

    if not os.path.exists(path):
        raise ValueError(f"result {path!r} does not exist")
    try:
        g = zarr.open_group(path, mode="r")
    except Exception:
        raise ValueError(f"{path!r} is not a Zarr group; give the folder written by 'flowtie-dask reconstruct'") from None
    attrs = dict(g.attrs)
    if attrs.get("schema") != RESULT_SCHEMA or "phase" not in g:
        raise ValueError(f"{path!r} is not a flowtie-dask result (no schema {RESULT_SCHEMA!r} or no 'phase')")
    extra = {k: v for k, v in attrs.items() if k not in ("pixel_size_A", "origin_A", "periodic")}
    return ReconstructionResult(
        phase=g["phase"][:].astype(np.float64), amplitude=g["amplitude"][:].astype(np.float64),
        illumination=g["illumination"][:].astype(np.float64), pixel_size=tuple(attrs["pixel_size_A"]),
        origin=tuple(attrs["origin_A"]), periodic=bool(attrs.get("periodic", False)), attrs=extra)

"""The optics a dimensionless FlowTIE model takes (:data:`OPTICS_INPUTS`) and their dimensionless groups, without
torch (the training dataset and the checkpoint checks use them; the network is
:class:`flowtie_dask.model.dimensionless.DimensionlessFlowModel`)."""

from __future__ import annotations

import math

__all__ = ["OPTICS_INPUTS", "optics_inputs", "dimensionless_groups"]

#: The per-sample optics the model needs (floats or (B,) tensors): wavelength Å, semi-angle rad, scan steps Å,
#: half the C10 span Å, C30 Å, aperture edge rad, detector sampling 1/Å (a float, (B,), or (P,)/(B, P) per pixel).
OPTICS_INPUTS = ("wavelength", "semiangle", "step_x", "step_y", "defocus_step", "cs", "edge", "pixel_x", "pixel_y")


def optics_inputs(geometry) -> dict:
    """The model's optics inputs from a :class:`~flowtie_dask.geometry.ReconstructionGeometry`.

    Returns
    -------
    dict
        :data:`OPTICS_INPUTS` → float (Å, rad, 1/Å).
    """
    c10 = sorted(float(c) for c in geometry.c10)
    return {"wavelength": float(geometry.wavelength), "semiangle": float(geometry.semiangle) * 1e-3,
            "step_x": float(geometry.scan_step[0]), "step_y": float(geometry.scan_step[1]),
            "defocus_step": (c10[2] - c10[0]) / 2, "cs": float(geometry.aberrations.get("C30", 0.0)),
            "edge": float(geometry.aperture_edge) * 1e-3,
            "pixel_x": float(geometry.detector_sampling[0]), "pixel_y": float(geometry.detector_sampling[1])}


def dimensionless_groups(optics: dict) -> dict:
    """The optics' dimensionless groups (floats): what a model's record ranges are stated in.

    ``step_probe`` = √(s_x s_y)·α/λ, ``defocus_phase`` = Δz α²/λ, ``cs_phase`` = C30 α⁴/2λ, ``pixel_aperture`` =
    √(Δq_x Δq_y)·λ/α, ``edge_aperture`` = edge/α, ``step_ratio`` = s_x/s_y.
    """
    lam, a = float(optics["wavelength"]), float(optics["semiangle"])
    s = math.sqrt(float(optics["step_x"]) * float(optics["step_y"]))
    dq = math.sqrt(float(optics["pixel_x"]) * float(optics["pixel_y"]))
    return {"step_probe": s * a / lam, "defocus_phase": float(optics["defocus_step"]) * a * a / lam,
            "cs_phase": float(optics["cs"]) * a**4 / (2 * lam), "pixel_aperture": dq * lam / a,
            "edge_aperture": float(optics["edge"]) / a, "step_ratio": float(optics["step_x"]) / float(optics["step_y"])}

"""A FlowTIE network whose inputs are dimensionless, so that one set of weights serves every microscope.

Derivation (DESIGN §3). For one detector pixel q the probe-frame phase φ(q, r̂) obeys

    ∂I/∂C10 = −(λ/2π) ∇·(I ∇φ) + λ q·∇I.

Write the scan coordinates in scan steps, r̂ = (s_x n_x, s_y n_y), so ∂/∂r̂_x = (1/s_x) ∂/∂n_x, divide by the
scan-mean pattern Ī(q) (I = Ī(1 + c)) and multiply by 2π s_x s_y/λ. For equal steps s this is exactly

    A ≡ (2π s²/λ)·(∂I/∂C10)/Ī = −∇_n·((1 + c) ∇_n φ) + 2π κ·∇_n c,    κ = (s_x q_x, s_y q_y)

(for unequal steps the two terms of the divergence carry s_y/s_x and s_x/s_y; those ratios are inputs too).
In the scan's own grid the equation has no units and its coefficients are A, c and κ (the detector
frequency in cycles per scan step); the unknown, the forward difference u = φ(n + 1) − φ(n) in rad per step,
is what the network predicts. So in the regime where the TIE holds the network needs nothing else, at any
beam energy, aperture, step or detector sampling.

Where the TIE is only approximate — a finite defocus step, a probe that is not small against the step,
pixels near the aperture edge, phase vortices in the dark field — the errors depend on the probe's shape in
those same grid units, which is set by a few dimensionless groups of the optics (k = α/λ, the aperture
radius in 1/Å):

* the defocus step as the aberration phase it adds at the aperture edge, πλΔz k² = πΔz α²/λ (input: Δz α²/λ);
* C30's phase at the edge, (π/2) C30 λ³ k⁴ (input: C30 α⁴/2λ);
* the step against the probe size, s·k;
* the pixel's place and size in units of the aperture, |q|/k and Δq/k; the aperture edge width / α.

The network sees (per detector pixel, all dimensionless): 0 A; 1 c = i0/Ī − 1; 2–3 2κ (q against the scan's
Nyquist frequency); 4 |q|/k; 5 log-brightness of the pixel (as :class:`SharedFlowModel`); 6 s·k; 7 Δz α²/λ;
8 C30 α⁴/2λ; 9 Δq/k; 10 edge/α; 11 log(s_x/s_y).

What it cannot see, and why that is safe: the absolute energy, semi-angle, step and sampling (only the groups
above enter the probe-frame relation between intensities and phase; two experiments with equal groups give
equal patterns, checked in the tests), the counts' scale (every intensity is divided by Ī) and the specimen
(thickness, elements, the interaction constant σ(E)): those are what the data encode. Dose is not an input of
:class:`DimensionlessFlowModel`: it is trained on Poisson-noised tiles over the dose range its record states, and
so has to hedge between sharp and smooth. :class:`DoseAwareFlowModel` adds one channel, 12, the relative shot noise
of each pixel, ρ = 1/√(1 + N·Ī(q)) with N the electrons per pattern and Ī(q) the pixel's scan-mean intensity in
units of the pattern sum (so N·Ī is its mean count per pattern; a super-pixel of m pixels counts m times as many).
It is 0 for noise-free data (N = 0 or ∞ stands for "no noise"), near 1 where a pixel sees under one electron per
pattern: dimensionless, and the same at every sampling for the same counts per pixel.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .architectures import BRIGHTNESS_DECADES, SharedFlowModel, mean_pattern
from .optics_groups import OPTICS_INPUTS, dimensionless_groups, optics_inputs  # noqa: F401  (re-exported)

__all__ = ["DimensionlessFlowModel", "DoseAwareFlowModel", "with_dose_input", "shot_noise", "OPTICS_INPUTS",
           "optics_inputs", "dimensionless_groups"]

def _sample(value: Any, like: torch.Tensor, b: int) -> torch.Tensor:
    """A float or (B,) tensor as a (B, 1) tensor."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return t.reshape(-1, 1).expand(b, 1) if t.ndim <= 1 else t


def _pixelwise(value: Any, like: torch.Tensor, b: int, p: int) -> torch.Tensor:
    """A float, (B,), (P,) or (B, P) value as (B, P)."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        return t.expand(b, p)
    if t.ndim == 1:
        return t.view(1, p).expand(b, p) if t.shape[0] == p and p != b else t.view(b, 1).expand(b, p)
    return t.expand(b, p)


class DimensionlessFlowModel(SharedFlowModel):
    """:class:`SharedFlowModel` (one scan-space CNN shared by all detector pixels, with detector mixing) fed
    with the dimensionless inputs of the module docstring, so its weights hold across optics.

    Call as ``model(didz, i0, q, optics=..., ibar=None, pixel_chunk=None)``; ``optics`` maps
    :data:`OPTICS_INPUTS` to floats or (B,) tensors (:func:`optics_inputs` makes it from a geometry). The
    parameters, receptive field and output (B, 2, P, Rx, Ry) in rad per scan step are those of
    :class:`SharedFlowModel`, with 12 input features instead of 6.
    """

    n_features = 12
    #: the forward pass needs ``optics=`` (training and inference pass it when this is true)
    takes_optics = True

    def input_parts(self, didz: torch.Tensor, i0: torch.Tensor, q: torch.Tensor, *, ibar=None,
                    optics: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel input channels (module docstring), as :meth:`SharedFlowModel.input_parts`: the two that vary
        over the scan and the rest, constant over it (``input_features`` joins them).

        Parameters
        ----------
        didz, i0 : Tensor, shape (B, P, Rx, Ry)
            ∂I/∂C10 (1/Å) and the in-focus intensity.
        q : Tensor, shape (P, 2) or (B, P, 2)
            1/Å, scan-aligned.
        ibar : Tensor, shape (P,) or (B, P), optional
            The mean pattern to normalise with (default: the scan mean of ``i0``).
        optics : dict
            :data:`OPTICS_INPUTS`.

        Returns
        -------
        scan : Tensor, shape (B, 2, P, Rx, Ry)
        pixel : Tensor, shape (B, 10, P) (11 with the dose input)
        """
        if optics is None:
            raise ValueError(f"{type(self).__name__} needs optics= (wavelength, semi-angle, steps …): "
                             "see flowtie_dask.model.dimensionless.optics_inputs")
        missing = [k for k in OPTICS_INPUTS if k not in optics]
        if missing:
            raise ValueError(f"optics lacks {', '.join(missing)}")
        b, p = didz.shape[:2]
        q = torch.as_tensor(q, dtype=didz.dtype, device=didz.device)
        if q.shape[-2:] != (p, 2):
            raise ValueError(f"q must be (P, 2) or (B, P, 2) with P = {p}, got {tuple(q.shape)}")
        q = q.expand(b, p, 2)
        lam, alpha = _sample(optics["wavelength"], didz, b), _sample(optics["semiangle"], didz, b)
        sx, sy = _sample(optics["step_x"], didz, b), _sample(optics["step_y"], didz, b)
        k = alpha / lam  # aperture radius, 1/Å
        raw = i0.mean(dim=(-2, -1)) if ibar is None else torch.as_tensor(
            ibar, dtype=i0.dtype, device=i0.device).expand(b, p)
        ib = mean_pattern(i0, raw)
        rel = raw / raw.amax(dim=1, keepdim=True).clamp_min(torch.finfo(i0.dtype).tiny)
        dq = torch.sqrt(_pixelwise(optics["pixel_x"], didz, b, p) * _pixelwise(optics["pixel_y"], didz, b, p))
        groups = [torch.sqrt(sx * sy) * k, _sample(optics["defocus_step"], didz, b) * alpha * k,
                  _sample(optics["cs"], didz, b) * alpha**3 * k / 2, _sample(optics["edge"], didz, b) / alpha,
                  torch.log(sx / sy)]
        per_pixel = torch.stack([
            2 * sx * q[..., 0], 2 * sy * q[..., 1], q.norm(dim=-1) / k,
            torch.log10(rel.clamp_min(10.0**-BRIGHTNESS_DECADES)) / BRIGHTNESS_DECADES,
            groups[0].expand(b, p), groups[1].expand(b, p), groups[2].expand(b, p), dq / k,
            groups[3].expand(b, p), groups[4].expand(b, p)], dim=1)  # (B, 10, P)
        if self.n_features > 12:  # DoseAwareFlowModel: the relative shot noise per pixel
            counts = optics.get("electrons", 0.0)
            per_pixel = torch.cat([per_pixel, shot_noise(_pixelwise(counts, didz, b, p), raw)[:, None]], dim=1)
        scale = (2 * math.pi / lam * sx * sy)[..., None, None]  # (B, 1, 1, 1)
        return torch.stack([didz * scale / ib, i0 / ib - 1.0], dim=1), per_pixel


def shot_noise(electrons: torch.Tensor, mean_intensity: torch.Tensor) -> torch.Tensor:
    """The relative shot noise of each pixel, ρ = 1/√(1 + N·Ī) (module docstring); 0 where N is 0 or ∞.

    Parameters
    ----------
    electrons : Tensor, shape (B, P)
        N: electrons per pattern, times the pixels a super-pixel holds (0 or inf: noise-free).
    mean_intensity : Tensor, shape (B, P)
        Ī: each pixel's scan-mean intensity in units of the pattern sum (a fraction, ≥ 0).

    Returns
    -------
    Tensor, shape (B, P), in [0, 1]
    """
    noisy = (electrons > 0) & torch.isfinite(electrons)
    n = torch.where(noisy, electrons, torch.zeros_like(electrons)) * mean_intensity.clamp_min(0.0)
    return torch.where(noisy, torch.rsqrt(1.0 + n), torch.zeros_like(n))


class DoseAwareFlowModel(DimensionlessFlowModel):
    """:class:`DimensionlessFlowModel` with a 13th input, the relative shot noise of each pixel (:func:`shot_noise`,
    module docstring), so one set of weights can be sharp on clean data and smooth on noisy data.

    ``optics`` may carry ``electrons`` (float, (B,), (P,) or (B, P): electrons per pattern, times the members of a
    super-pixel; 0 or inf for noise-free data, the default when absent).
    """

    n_features = 13


def with_dose_input(model: DimensionlessFlowModel) -> DoseAwareFlowModel:
    """The :class:`DoseAwareFlowModel` equal to ``model`` at every dose (the noise channel starts at zero weight):
    the warm start of ``train --architecture dose-aware --init general``.

    Parameters
    ----------
    model : DimensionlessFlowModel

    Returns
    -------
    DoseAwareFlowModel
        With ``model``'s sizes, on the CPU.
    """
    if type(model) is not DimensionlessFlowModel:
        raise ValueError(f"with_dose_input needs a DimensionlessFlowModel, got {type(model).__name__}")
    cfg = {k: v for k, v in model.config().items() if k != "name"}
    new = DoseAwareFlowModel(**cfg)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    w = state["stem.weight"]
    state["stem.weight"] = torch.cat([w, torch.zeros_like(w[:, :1])], dim=1)
    new.load_state_dict(state)
    return new


def from_shared(model: SharedFlowModel, optics: dict) -> DimensionlessFlowModel:
    """A :class:`DimensionlessFlowModel` that equals a trained :class:`SharedFlowModel` at ``optics``.

    The body, mixing and head weights are copied; the stem's weights of the six old inputs are rescaled so that
    at the given optics the new inputs 0–5 feed it exactly what the old ones did (didz·DZ_REF/Ī = A·DZ_REF·λ/2πs_xs_y,
    q·Q_SCALE = 2κ·Q_SCALE/2s, |q|·Q_SCALE = (|q|/k)·Q_SCALE·k), and the stem bias absorbs nothing: the six new
    groups start with zero weight. A warm start for training across optics (``train --init``).

    Parameters
    ----------
    model : SharedFlowModel
    optics : dict
        :data:`OPTICS_INPUTS` (floats) of the setting the old model was trained for.

    Returns
    -------
    DimensionlessFlowModel
        With the old model's sizes, on the CPU.
    """
    from .architectures import DZ_REF, Q_SCALE

    if type(model) is not SharedFlowModel:
        raise ValueError(f"from_shared needs a SharedFlowModel, got {type(model).__name__}")
    cfg = {k: v for k, v in model.config().items() if k != "name"}
    new = DimensionlessFlowModel(**cfg)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    old_w = state["stem.weight"]  # (H, 6, k, k)
    lam, sx, sy = optics["wavelength"], optics["step_x"], optics["step_y"]
    k = optics["semiangle"] / lam
    factors = [DZ_REF * lam / (2 * math.pi * sx * sy), 1.0, Q_SCALE / (2 * sx), Q_SCALE / (2 * sy), Q_SCALE * k, 1.0]
    w = torch.zeros((old_w.shape[0], DimensionlessFlowModel.n_features) + tuple(old_w.shape[2:]), dtype=old_w.dtype)
    for c, f in enumerate(factors):  # old channel c ↔ new channel c (0 A, 1 c, 2–3 2κ, 4 |q|/k, 5 brightness)
        w[:, c] = old_w[:, c] * f
    state["stem.weight"] = w
    new.load_state_dict(state)
    return new

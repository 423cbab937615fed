"""FlowTIE inside the reconstruction pipeline: a picklable phase method for
:func:`flowtie_dask.reconstruct.reconstruct_tile` (paper Algorithm 2, steps 2–3).

Per tile: ∂I/∂C10 and I₀ → model → forward-difference field u (rad per scan step) → least-squares
integration with the matching discrete operator (mirror boundary on tiles) → probe-frame phase, whose
per-q mean is set to the probe's phase like the TIE's. Exit waves and projection follow as for TIE.
The model is loaded once per worker process and runs on the worker's device (CPU, or its GPU with
CuPy↔torch through DLPack).

Symmetry averaging (``symmetry="mirror"`` or ``"d4"``): with a probe symmetric under the mirrors (only
C10, C30: no astigmatism), mirroring the specimen x → −x turns the data into I(−q_x, q_y; −r̂_x, r̂_y).
The detector-agnostic model takes every pixel's q as an input, so the mirrored experiment is fed by
reversing the scan axis and negating that q label, without moving a detector pixel; its prediction is
mapped back (reversed, negated, and shifted by one position since u is a forward difference) and the
predictions of the group's elements are averaged: 4 (the mirrors) or 8 (with the diagonal mirror, needing
equal scan steps). Cost: that many model evaluations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import from_torch, get_array_module, to_torch
from ..tie import defocus_derivative, integrate_gradient
from .checkpoint import CheckpointError, check_compatible, default_model_path, load_checkpoint

__all__ = ["FlowTIEPhase", "SYMMETRIES"]

_CACHE: dict = {}

#: Group elements (transpose, flip x, flip y) averaged by each ``symmetry`` setting.
SYMMETRIES = {
    "none": [(False, False, False)],
    "mirror": [(False, False, False), (False, True, False), (False, False, True), (False, True, True)],
}
SYMMETRIES["d4"] = SYMMETRIES["mirror"] + [(True, fx, fy) for _, fx, fy in SYMMETRIES["mirror"]]


def _to_frame(x, q, element):
    """Data (B, P, hx, hy) and labels q (P, 2) of the transformed experiment (transpose, then flips)."""
    import torch

    swap, fx, fy = element
    q = q.clone()
    if swap:
        x = x.transpose(-2, -1)
        q = q[:, [1, 0]]
    if fx:
        x = torch.flip(x, dims=(-2,))
        q[:, 0] = -q[:, 0]
    if fy:
        x = torch.flip(x, dims=(-1,))
        q[:, 1] = -q[:, 1]
    return x.contiguous(), q


def _from_frame(u, element):
    """Forward-difference field (B, 2, P, h1, h2) of the transformed experiment in the original frame.

    The last position along a flipped axis has no counterpart (it would be the difference across the
    tile edge); it is returned as NaN and filled by the caller.
    """
    import torch

    swap, fx, fy = element
    ux, uy = u[:, 0], u[:, 1]

    def unflip(v, w, dim):  # v along the flipped axis: u(m) = −u'(N−2−m); w across it: reversed
        v = -torch.roll(torch.flip(v, dims=(dim,)), -1, dims=dim)
        v.select(dim, -1).fill_(float("nan"))
        return v, torch.flip(w, dims=(dim,))

    if fy:
        uy, ux = unflip(uy, ux, -1)
    if fx:
        ux, uy = unflip(ux, uy, -2)
    if swap:
        ux, uy = uy.transpose(-2, -1), ux.transpose(-2, -1)
    return torch.stack([ux, uy], dim=1)


class FlowTIEPhase:
    """Probe-frame phase of every pattern of a tile from a FlowTIE checkpoint.

    Parameters
    ----------
    path : str, optional
        Checkpoint; the shipped pretrained model when omitted.
    pixel_chunk : int
        Detector pixels per model call (bounds memory to ~pixel_chunk·hidden·tile² floats).
    symmetry : {"none", "mirror", "d4"}
        Average the predictions over the specimen mirrors (4 model evaluations) or the square's
        symmetry group (8) — see the module docstring. Needs a model that takes q (the
        detector-agnostic one) and a probe without astigmatism; "d4" also equal scan steps.
    """

    __name__ = "flowtie"

    def __init__(self, path: str | None = None, *, pixel_chunk: int = 256, symmetry: str = "none"):
        import os

        if symmetry not in SYMMETRIES:
            raise ValueError(f"unknown symmetry {symmetry!r}: use one of {sorted(SYMMETRIES)}")
        self.symmetry = symmetry

        self.path = os.path.abspath(path or default_model_path())
        if not os.path.isfile(self.path):
            if path is None:
                raise CheckpointError("no pretrained FlowTIE model is installed with this package; pass --model PATH "
                                      "(train one with 'flowtie-dask train') or use --method tie")
            raise CheckpointError(f"checkpoint {self.path!r} does not exist")
        self.pixel_chunk = int(pixel_chunk)
        model, self.meta = self._model("cpu")
        from .architectures import SharedFlowModel

        if symmetry != "none" and not isinstance(model, SharedFlowModel):
            raise ValueError(f"symmetry={symmetry!r} needs a model that takes each pixel's q "
                             f"(SharedFlowModel); {type(model).__name__} does not: use symmetry='none'")

    def _model(self, device: str):
        key = (self.path, device)
        if key not in _CACHE:
            model, meta, _ = load_checkpoint(self.path, map_location=device)
            _CACHE[key] = (model, meta)
        return _CACHE[key]

    @property
    def receptive_field(self) -> int:
        """Scan positions of context the model needs on each side of a position."""
        model, _ = self._model("cpu")
        return int(getattr(model, "receptive_field", 4))

    def check(self, geometry) -> None:
        """Raise :class:`CheckpointError` unless the scan's optics and sampling match the model's (a
        checkpoint without an optics record is refused: nothing could be checked), and ``ValueError`` when
        the scan breaks the symmetry asked for."""
        check_compatible(self.meta.get("optics"), geometry, source=repr(self.path))
        if self.symmetry == "none":
            return
        if abs(float(geometry.aberrations.get("C12", 0.0))) > 1e-6:
            raise ValueError(f"symmetry={self.symmetry!r} needs a probe without astigmatism (C12 = "
                             f"{geometry.aberrations['C12']:g} Å here): use symmetry='none'")
        if self.symmetry == "d4" and abs(geometry.scan_step[0] - geometry.scan_step[1]) > 1e-6 * geometry.scan_step[0]:
            raise ValueError(f"symmetry='d4' needs equal scan steps, got {tuple(geometry.scan_step)} Å: "
                             "use symmetry='mirror'")

    def field(self, intensity: Any, geometry):
        """Predicted forward-difference field of every pattern of an oriented tile.

        Parameters
        ----------
        intensity : ndarray, shape (3, hx, hy, Qx, Qy)

        Returns
        -------
        i0 : ndarray, shape (hx, hy, Qx, Qy)
        g : ndarray, shape (2, hx, hy, Qx, Qy)
            ∂φ along the two scan axes as forward differences, rad/Å (same array module as the input).
        """
        import torch

        xp = get_array_module(intensity)
        device = "cpu" if xp is np else "cuda"
        model, _ = self._model(device)
        didz, i0 = defocus_derivative(intensity, geometry.c10)
        hx, hy, nqx, nqy = i0.shape
        p = nqx * nqy

        def pixels_first(a):  # (hx, hy, Qx, Qy) → (1, P, hx, hy) float32 tensor
            return to_torch(xp.ascontiguousarray(xp.moveaxis(a.reshape(hx, hy, p), -1, 0)[None].astype(xp.float32)))

        qx, qy = geometry.q_vectors(np)
        q = torch.from_numpy(np.stack(np.meshgrid(qx, qy, indexing="ij"), -1).reshape(p, 2).astype(np.float32))
        kwargs = {"pixel_chunk": self.pixel_chunk} if "pixel_chunk" in model.forward.__code__.co_varnames else {}
        didz_t, i0_t, q = pixels_first(didz), pixels_first(i0), q.to(device)
        with torch.no_grad():
            u = model(didz_t, i0_t, q, **kwargs)
            if self.symmetry != "none":
                # mean over the elements that see each difference (those flipping an axis do not see
                # the last one along it), which keeps the average equivariant up to the tile edges
                total, count = u.clone(), torch.ones_like(u)
                for element in SYMMETRIES[self.symmetry][1:]:
                    d, q_e = _to_frame(didz_t, q, element)
                    i, _ = _to_frame(i0_t, q, element)
                    back = _from_frame(model(d, i, q_e, **kwargs), element)
                    seen = ~torch.isnan(back)
                    total += torch.where(seen, back, 0.0)
                    count += seen
                u = total / count
        u = from_torch(u[0])  # (2, P, hx, hy), rad per scan step
        g = xp.stack([xp.moveaxis(u[c], 0, -1).reshape(hx, hy, nqx, nqy) / geometry.scan_step[c] for c in (0, 1)])
        return i0, g

    def __call__(self, intensity: Any, geometry, *, boundary: str):
        """Return ``(i0, phase)``, both (hx, hy, Qx, Qy), for an oriented tile (3, hx, hy, Qx, Qy)."""
        xp = get_array_module(intensity)
        i0, g = self.field(intensity, geometry)
        phase = integrate_gradient(g[0], g[1], step=geometry.scan_step, kind="forward", boundary=boundary)
        phase = phase + xp.angle(geometry.probe_spectrum(xp)).astype(phase.dtype)[None, None]
        return i0, phase

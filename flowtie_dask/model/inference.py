"""FlowTIE inside the reconstruction pipeline: a picklable phase method for
:func:`flowtie_dask.reconstruct.reconstruct_tile` (paper Algorithm 2, steps 2–3).

Per tile: ∂I/∂C10 and I₀ → model → forward-difference field u (rad per scan step) → least-squares
integration with the matching discrete operator (mirror boundary on tiles) → probe-frame phase, whose
per-q mean is set to the probe's phase like the TIE's. Exit waves and projection follow as for TIE.
The model is loaded once per worker process and runs on the worker's device (CPU, or its GPU with
CuPy↔torch through DLPack).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import from_torch, get_array_module, to_torch
from ..tie import defocus_derivative, integrate_gradient
from .checkpoint import CheckpointError, check_compatible, default_model_path, load_checkpoint

__all__ = ["FlowTIEPhase"]

_CACHE: dict = {}


class FlowTIEPhase:
    """Probe-frame phase of every pattern of a tile from a FlowTIE checkpoint.

    Parameters
    ----------
    path : str, optional
        Checkpoint; the shipped pretrained model when omitted.
    pixel_chunk : int
        Detector pixels per model call (bounds memory to ~pixel_chunk·hidden·tile² floats).
    """

    __name__ = "flowtie"

    def __init__(self, path: str | None = None, *, pixel_chunk: int = 256):
        import os

        self.path = os.path.abspath(path or default_model_path())
        if not os.path.isfile(self.path):
            if path is None:
                raise CheckpointError("no pretrained FlowTIE model is installed with this package; pass --model PATH "
                                      "(train one with 'flowtie-dask train') or use --method tie")
            raise CheckpointError(f"checkpoint {self.path!r} does not exist")
        self.pixel_chunk = int(pixel_chunk)
        _, self.meta = self._model("cpu")

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
        """Raise :class:`CheckpointError` unless the scan's optics and sampling match the model's."""
        check_compatible(self.meta.get("optics", {}), geometry)

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
        with torch.no_grad():
            kwargs = {"pixel_chunk": self.pixel_chunk} if "pixel_chunk" in model.forward.__code__.co_varnames else {}
            u = model(pixels_first(didz), pixels_first(i0), q.to(device), **kwargs)
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

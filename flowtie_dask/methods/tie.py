"""Classical TIE per detector pixel (DESIGN §3): the probe-frame phase of every pattern of a haloed tile."""

from __future__ import annotations

from ..reconstruct import tie_phase_of_tile
from . import register
from .base import Method

__all__ = ["TIE"]


@register
class TIE(Method):
    """Transport of intensity over the scan for every detector pixel, solved by FFT (tiled, distributed)."""

    name = "tie"
    summary = "classical TIE per detector pixel (tiled, distributed)"
    backends = ("numpy", "cupy")
    kind = "tile"

    def __init__(self, *, eps: float = 1e-3):
        if not eps > 0:
            raise ValueError(f"eps must be > 0 (relative dark-field regulariser), got {eps}")
        self.eps = float(eps)

    def identity(self) -> tuple:
        return (self.name, self.eps)

    def attrs(self) -> dict:
        return {"method": self.name, "model": None, "symmetry": "none"}

    def phase(self, intensity, geometry, *, boundary: str):
        """See :meth:`Method.phase`; (3, hx, hy, Qx, Qy) → i0, phase (hx, hy, Qx, Qy) in rad."""
        return tie_phase_of_tile(intensity, geometry, boundary=boundary, eps=self.eps)

"""FlowTIE: a CNN predicts the gradient field of every pattern's probe-frame phase (a two-pass method: per-tile
fields, integrated over the whole scan, then projected; one tile is integrated within itself)."""

from __future__ import annotations

from ..model.inference import FlowTIEPhase  # light: torch is imported when a model is loaded
from . import register
from .base import Method, Needs, Option

__all__ = ["FlowTIE"]


@register
class FlowTIE(Method):
    """The FlowTIE model (``model``: a checkpoint, default the shipped one) whose optics must match the scan."""

    name = "flowtie"
    summary = "the FlowTIE model (tiled, distributed; its optics must match the scan)"
    backends = ("numpy", "cupy", "torch")
    kind = "field"
    options = (
        Option("model", "FlowTIE checkpoint (default: the pretrained model shipped with the package); its optics and "
               "sampling must match the scan's", metavar="PATH", input_path=True),
        Option("symmetry", "average the model over the specimen's mirrors (4× the model's time) or all 8 "
               "symmetries of the square (8×); needs a probe without astigmatism", choices=("none", "mirror", "d4")),
    )

    def __init__(self, *, model: str | None = None, symmetry: str = "none"):
        if symmetry not in ("none", "mirror", "d4"):
            raise ValueError(f"symmetry must be 'none', 'mirror' or 'd4', got {symmetry!r}")
        self._phase = FlowTIEPhase(model, symmetry=symmetry)
        self.path, self.symmetry = self._phase.path, symmetry

    def identity(self) -> tuple:
        return (self.name, self.path, self.symmetry)

    def attrs(self) -> dict:
        return {"method": self.name, "model": self.path, "symmetry": self.symmetry}

    def needs(self, geometry) -> Needs:
        """Twice the model's receptive field in scan positions."""
        return Needs(halo=2 * self._phase.receptive_field)

    def check(self, geometry) -> None:
        """The checkpoint's optics record must match the scan (and the symmetry its probe)."""
        self._phase.check(geometry)

    def phase(self, intensity, geometry, *, boundary: str):
        """See :meth:`Method.phase` (the field integrated within the tile)."""
        return self._phase(intensity, geometry, boundary=boundary)

    def field(self, intensity, geometry):
        """See :meth:`Method.field`."""
        return self._phase.field(intensity, geometry)

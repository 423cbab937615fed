"""FlowTIE: a CNN predicts the gradient field of every pattern's probe-frame phase (a two-pass method: per-tile
fields, integrated over the whole scan, then projected; one tile is integrated within itself)."""

from __future__ import annotations

from ..consistency import DEFAULT_ITERATIONS
from ..model.inference import DEFAULT_DARK_FIELD_BIN, DEFAULT_MARGIN, FlowTIEPhase  # light: torch on loading a model
from . import register
from .base import Method, Needs, Option, check_consistency, consistency_option

__all__ = ["FlowTIE"]


@register
class FlowTIE(Method):
    """The FlowTIE model (``model``: a checkpoint or a shipped name, default ``general``) whose trained ranges must hold
    the scan.

    ``dark_field_bin`` b > 1 runs the fast form: the model on each pixel with |q| ≤ (1 + ``bright_field_margin``)·α/λ
    and on b×b super-pixels of the dark field, whose fields every member pixel takes
    (:mod:`flowtie_dask.model.inference`); 1 runs it on every pixel.
    """

    name = "flowtie"
    summary = "the FlowTIE model (tiled, distributed; its optics must match the scan)"
    backends = ("numpy", "cupy", "torch")
    kind = "field"
    rotates_windows = True
    band_limits_noise = True
    options = (
        Option("model", "FlowTIE checkpoint, or a shipped model by name: general (the default, trained across optics) "
               "or paper-64 (the paper's 300 kV / 20 mrad / ±20 Å only); the scan must lie in its trained ranges",
               metavar="PATH|NAME", input_path=True),
        Option("symmetry", "average the model over the specimen's mirrors (4× the model's time) or all 8 "
               "symmetries of the square (8×); needs a probe without astigmatism", choices=("none", "mirror", "d4")),
        Option("dark_field_bin", f"side in detector pixels of the dark-field super-pixels the model runs on (default "
               f"{DEFAULT_DARK_FIELD_BIN}: the fast form, about 9× faster on a CPU and within 4 % of the full form); "
               "1: every pixel (the full form)", type=int, metavar="B"),
        Option("bright_field_margin", f"with --dark-field-bin > 1, pixels within (1 + this)·the aperture radius are "
               f"evaluated one by one (default {DEFAULT_MARGIN})", type=float, metavar="FRACTION"),
        consistency_option(),
    )

    def __init__(self, *, model: str | None = None, symmetry: str = "none",
                 dark_field_bin: int = DEFAULT_DARK_FIELD_BIN, bright_field_margin: float = DEFAULT_MARGIN,
                 consistency: int = DEFAULT_ITERATIONS):
        if symmetry not in ("none", "mirror", "d4"):
            raise ValueError(f"symmetry must be 'none', 'mirror' or 'd4', got {symmetry!r}")
        if isinstance(dark_field_bin, bool) or int(dark_field_bin) != dark_field_bin or dark_field_bin < 1:
            raise ValueError(f"dark_field_bin must be an integer ≥ 1 (1: the full form), got {dark_field_bin!r}")
        if not bright_field_margin >= 0:
            raise ValueError(f"bright_field_margin must be ≥ 0 (fraction of the aperture radius), "
                             f"got {bright_field_margin!r}")
        self._phase = FlowTIEPhase(model, symmetry=symmetry, dark_field_bin=int(dark_field_bin),
                                   margin=float(bright_field_margin))
        self.path, self.symmetry = self._phase.path, symmetry
        # a model that labels each pixel with its q takes a turned detector by its labels; one whose channels are
        # the detector's pixels (the paper's FlowPredictorModel) needs the patterns turned onto the scan axes
        self.rotates_windows = bool(self._phase.shared)
        self.dark_field_bin, self.bright_field_margin = int(dark_field_bin), float(bright_field_margin)
        self.consistency = check_consistency(consistency)

    def identity(self) -> tuple:
        return (self.name, self.path, self.symmetry, self.dark_field_bin, self.bright_field_margin, self.consistency)

    def attrs(self) -> dict:
        return {"method": self.name, "model": self.path, "symmetry": self.symmetry,
                "dark_field_bin": self.dark_field_bin, "bright_field_margin": self.bright_field_margin,
                "consistency": self.consistency}

    def needs(self, geometry) -> Needs:
        """Twice the model's receptive field in scan positions."""
        return Needs(halo=2 * self._phase.receptive_field)

    def check(self, geometry) -> None:
        """The checkpoint's optics record must match the scan (and the symmetry its probe)."""
        self._phase.check(geometry)

    def phase(self, intensity, geometry, *, boundary: str):
        """See :meth:`Method.phase` (the field integrated within the tile)."""
        return self._phase(intensity, geometry, boundary=boundary)

    def field(self, intensity, geometry, *, interior=None, own=False):
        """See :meth:`Method.field` (``own`` is not used: the model's inputs are new arrays anyway)."""
        return self._phase.field(intensity, geometry, interior=interior)

"""Gradient descent on the far-field amplitudes (the paper's baseline), on the whole scan at once: ``gd``
(A = diag(O), converged) and ``gd-dense`` (the paper's literal dense A from the identity)."""

from __future__ import annotations

from . import register
from .base import Method, Needs, Option

__all__ = ["GradientDescent", "DenseGradientDescent"]


_ITERATIONS = Option("iterations", "gradient-descent iterations (default 100)", type=int)


class _GD(Method):
    kind = "whole"
    backends = ("torch",)
    form = "diagonal"

    def __init__(self, *, iterations: int = 100, initial: str | None = None, readout: str = "projection"):
        if int(iterations) < 1:
            raise ValueError(f"iterations must be ≥ 1, got {iterations}")
        if readout not in ("projection", "diagonal"):
            raise ValueError(f"readout must be 'projection' or 'diagonal', got {readout!r}")
        self.iterations, self.initial, self.readout = int(iterations), initial, readout

    def identity(self) -> tuple:
        return (self.name, self.iterations, self.initial, self.readout)

    def needs(self, geometry) -> Needs:
        """The whole scan (the runner checks it fits memory before anything is allocated)."""
        return Needs(whole_scan=True)

    def run_whole(self, store, *, periodic, device: str, progress: bool):
        """See :meth:`Method.run_whole` (``flowtie_dask.baselines.gd.gd_reconstruct_store``)."""
        from ..baselines.gd import gd_reconstruct_store
        from ..results import open_result

        initial = open_result(self.initial) if self.initial is not None else None
        kw = {"readout": self.readout} if self.form == "dense" else {}
        return gd_reconstruct_store(store, iterations=self.iterations, periodic=periodic,
                                    device="cuda" if device == "gpu" else device, progress=progress,
                                    initial=initial, form=self.form, **kw)


@register
class GradientDescent(_GD):
    """A = diag(O): a converged thin-object form of the paper's baseline (any scan size that fits memory)."""

    name = "gd"
    summary = ("gradient descent on the far-field amplitudes with A = diag(O), a converged form of the paper's "
               "baseline (whole scan in memory)")
    form = "diagonal"
    options = (_ITERATIONS,
               Option("initial", "start from the phase of an earlier result of this scan (e.g. a FlowTIE one; 10 "
                      "iterations then reach what 100 reach from a flat start)", metavar="RESULT", input_path=True))


@register
class DenseGradientDescent(_GD):
    """The paper's dense A ∈ C^{N²×N²} from the identity (periodic scans with the object grid = the window)."""

    name = "gd-dense"
    summary = "the paper's literal dense-A gradient descent (periodic scans up to 64×64; whole scan in memory)"
    form = "dense"
    options = (_ITERATIONS,
               Option("readout", "the object from the model's exit waves A·P projected as for TIE/FlowTIE "
                      "(projection, default) or diag(A)", choices=("projection", "diagonal")))

    def __init__(self, *, iterations: int = 100, readout: str = "projection"):
        super().__init__(iterations=iterations, readout=readout)

    def check(self, geometry) -> None:
        """A periodic scan whose object grid is the detector window, at most 64×64, that fits memory."""
        from ..baselines.gd import _check_dense

        if not geometry.periodic:
            raise ValueError("the dense form needs a periodic scan (its F₂D is square only on one period): "
                             "use --method gd")
        _check_dense(geometry)

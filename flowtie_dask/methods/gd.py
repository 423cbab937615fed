"""Gradient descent on the far-field amplitudes (the paper's baseline), on the whole scan at once: ``gd``
(A = diag(O), converged) and ``gd-dense`` (the paper's literal dense A from the identity).

Both are ``"whole"`` methods: they declare the scans they fit and the memory they need
(:meth:`needs`); the runner checks that memory before anything is read, reads and checks the scans,
and calls :meth:`run_whole` on the arrays. The kernels are :mod:`flowtie_dask.baselines.gd`.
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..baselines.gd.common import (
    _MIN_BATCH,
    _check_initial,
    _plan_batch,
    _scans_used,
    _step,
    _torch_device,
    check_dense_grid,
    dense_memory_estimate,
    gd_memory_estimate,
    sqrt_fft_order_inplace,
)
from ..baselines.gd.dense import _dense_run
from ..baselines.gd.diagonal import _run
from ..results import ReconstructionResult, open_result
from . import register
from .base import Method, Needs, Option

__all__ = ["GradientDescent", "DenseGradientDescent"]


_ITERATIONS = Option("iterations", "gradient-descent iterations (default 100)", type=int)


class _GD(Method):
    kind = "whole"
    backends = ("torch",)
    form = "diagonal"

    def __init__(self, *, iterations: int = 100, lr: float | None = None, optimizer: str = "gd",
                 use_all_defocus: bool = False):
        if int(iterations) < 1:
            raise ValueError(f"iterations must be ≥ 1, got {iterations}")
        if optimizer not in ("gd", "adam"):
            raise ValueError(f"optimizer must be 'gd' or 'adam', got {optimizer!r}")
        if lr is not None and not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be > 0, got {lr}")
        self.iterations, self.lr, self.optimizer = int(iterations), lr, optimizer
        self.use_all_defocus = bool(use_all_defocus)

    def identity(self) -> tuple:
        return (self.name, self.iterations, self.lr, self.optimizer, self.use_all_defocus)

    def attrs(self) -> dict:
        return {"method": self.name, "model": None, "symmetry": "none", "form": self.form,
                "iterations": self.iterations, "optimizer": self.optimizer,
                "use_all_defocus": self.use_all_defocus}

    def _scans(self, geometry) -> list[int]:
        return _scans_used(geometry, self.use_all_defocus)

    @staticmethod
    def _progress(progress, total):
        if progress is None:
            return None
        return lambda it, loss: progress(it + 1, total, loss)


@register
class GradientDescent(_GD):
    """A = diag(O): a converged thin-object form of the paper's baseline (any scan size that fits memory).

    Parameters
    ----------
    iterations : int
        Full-gradient steps (the paper: 100).
    initial : str or ReconstructionResult or ndarray, optional
        Start from this object: the path of a result of the same scan, such a result (its exp(i·phase)),
        or a complex (Nx, Ny) array on the object grid.
    lr, optimizer, use_all_defocus, parametrization, batch_size
        As :func:`flowtie_dask.baselines.gd.gd_reconstruct`.
    """

    name = "gd"
    summary = ("gradient descent on the far-field amplitudes with A = diag(O), a converged form of the paper's "
               "baseline (whole scan in memory)")
    form = "diagonal"
    options = (_ITERATIONS,
               Option("initial", "start from the phase of an earlier result of this scan (e.g. a FlowTIE one; 10 "
                      "iterations then reach what 100 reach from a flat start)", metavar="RESULT", input_path=True))

    def __init__(self, *, iterations: int = 100, initial=None, lr: float | None = None, optimizer: str = "gd",
                 use_all_defocus: bool = False, parametrization: str = "complex", batch_size: int | None = None):
        super().__init__(iterations=iterations, lr=lr, optimizer=optimizer, use_all_defocus=use_all_defocus)
        if parametrization not in ("complex", "phase"):
            raise ValueError(f"parametrization must be 'complex' or 'phase', got {parametrization!r}")
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError(f"batch_size must be ≥ 1 scan position, got {batch_size}")
        self.parametrization, self.batch_size = parametrization, batch_size
        self.initial_source = None
        if isinstance(initial, (str, os.PathLike)):
            self.initial_source = os.path.abspath(os.fspath(initial))
            initial = open_result(self.initial_source)
        self.initial = initial

    def identity(self) -> tuple:
        return super().identity() + (self.parametrization, self.batch_size,
                                     self.initial_source or (None if self.initial is None else "given"))

    def attrs(self) -> dict:
        return {**super().attrs(), "parametrization": self.parametrization,
                "initial": "O = 1" if self.initial is None else "given",
                "initial_source": self.initial_source}

    def check(self, geometry) -> None:
        """A starting result must be on this scan's object grid (same pixel and origin)."""
        if isinstance(self.initial, ReconstructionResult):
            _, origin = geometry.object_grid(periodic=geometry.periodic)
            if not (np.allclose(self.initial.pixel_size, geometry.pixel) and np.allclose(self.initial.origin, origin)):
                raise ValueError(f"the initial result's grid ({self.initial.pixel_size} Å pixels from "
                                 f"{self.initial.origin}) is not this scan's object grid ({geometry.pixel} Å from "
                                 f"{origin}): start from a result of the same scan")
        shape, _ = geometry.object_grid(periodic=geometry.periodic)
        _check_initial(self._initial_object(), shape)

    def _initial_object(self):
        if isinstance(self.initial, ReconstructionResult):
            return np.exp(1j * np.asarray(self.initial.phase))
        return self.initial

    def needs(self, geometry) -> Needs:
        """The fitted scans of the whole scan, and the memory of the smallest batch the fit can run in."""
        scans = self._scans(geometry)
        n_pos = int(np.prod(geometry.scan_shape))
        shape, _ = geometry.object_grid(periodic=geometry.periodic)
        batch = min(n_pos, _MIN_BATCH if self.batch_size is None else int(self.batch_size))
        memory = gd_memory_estimate(n_pos * len(scans), geometry.detector_shape, shape, batch=batch * len(scans))
        return Needs(whole_scan=True, defocus=tuple(scans), memory=memory)

    def run_whole(self, intensity, geometry, *, device: str = "cpu", progress=None):
        """See :meth:`Method.run_whole`: (S, Rx, Ry, Qx, Qy) of the fitted scans → the object O."""
        scans = self._scans(geometry)
        periodic = geometry.periodic
        shape, _ = geometry.object_grid(periodic=periodic)
        initial = _check_initial(self._initial_object(), shape)
        n_pos = int(np.prod(geometry.scan_shape))
        dev = _torch_device(device)
        batch = _plan_batch(n_pos * len(scans), n_pos, geometry.detector_shape, shape, device, self.batch_size)
        sqrt_i = sqrt_fft_order_inplace(intensity.reshape((len(scans), n_pos) + tuple(geometry.detector_shape)))
        obj, losses, det = _run(sqrt_i, geometry, scans, periodic=periodic, dev=dev, batch=batch,
                                iterations=self.iterations, lr=self.lr, optimizer=self.optimizer,
                                parametrization=self.parametrization,
                                callback=self._progress(progress, self.iterations), return_details=True,
                                initial=initial)
        attrs = {"lr": det["lr"], "batch_size": det["batch"], "final_loss": losses[-1], "initial_loss": losses[0],
                 "losses": [float(v) for v in losses], "seconds_optimisation": det["seconds"]}
        return obj, det["illumination"], det["origin"], attrs


@register
class DenseGradientDescent(_GD):
    """The paper's dense A ∈ C^{N²×N²} from the identity (periodic scans with the object grid = the window).

    Parameters
    ----------
    iterations : int
    readout : {"projection", "diagonal"}
        The object from the model's exit waves ψ = A·P projected like the TIE/FlowTIE ones (the paper's
        step A ≈ F⁻¹EPᴴ, then its diagonal over the illumination), or diag(A) itself.
    lr, optimizer, use_all_defocus
        As :func:`flowtie_dask.baselines.gd.dense_gd_reconstruct`.
    """

    name = "gd-dense"
    summary = "the paper's literal dense-A gradient descent (periodic scans up to 64×64; whole scan in memory)"
    form = "dense"
    options = (_ITERATIONS,
               Option("readout", "the object from the model's exit waves A·P projected as for TIE/FlowTIE "
                      "(projection, default) or diag(A)", choices=("projection", "diagonal")))

    def __init__(self, *, iterations: int = 100, readout: str = "projection", lr: float | None = None,
                 optimizer: str = "gd", use_all_defocus: bool = False):
        super().__init__(iterations=iterations, lr=lr, optimizer=optimizer, use_all_defocus=use_all_defocus)
        if readout not in ("projection", "diagonal"):
            raise ValueError(f"readout must be 'projection' (of the exit waves A·P) or 'diagonal', got {readout!r}")
        self.readout = readout

    def identity(self) -> tuple:
        return super().identity() + (self.readout,)

    def attrs(self) -> dict:
        return {**super().attrs(), "parametrization": "complex", "initial": "A = I", "readout": self.readout}

    def check(self, geometry) -> None:
        """A periodic scan whose object grid is the detector window, at most 64×64."""
        if not geometry.periodic:
            raise ValueError("the dense form needs a periodic scan (its F₂D is square only on one period): "
                             "use --method gd")
        check_dense_grid(geometry)

    def needs(self, geometry) -> Needs:
        """The fitted scans, and the dense A with its buffers plus the data."""
        scans = self._scans(geometry)
        data = 2 * 4 * int(np.prod(geometry.scan_shape)) * int(np.prod(geometry.detector_shape)) * len(scans)
        return Needs(whole_scan=True, defocus=tuple(scans), memory=dense_memory_estimate(geometry, len(scans)) + data)

    def run_whole(self, intensity, geometry, *, device: str = "cpu", progress=None):
        """See :meth:`Method.run_whole`: (S, Rx, Ry, Qx, Qy) of the fitted scans → the read-out object."""
        scans = self._scans(geometry)
        n_pos = int(np.prod(geometry.scan_shape))
        sqrt_i = sqrt_fft_order_inplace(intensity.reshape((len(scans), n_pos) + tuple(geometry.detector_shape)))
        t0 = time.perf_counter()
        a, losses, ill, projected = _dense_run(sqrt_i, geometry, scans, dev=_torch_device(device),
                                               iterations=self.iterations, lr=self.lr, optimizer=self.optimizer,
                                               callback=self._progress(progress, self.iterations))
        shape, origin = geometry.object_grid(periodic=True)
        diagonal = np.diag(a).reshape(shape)
        # rms of A's off-diagonal entries per row: how much of the fit is outside the object
        a_off = float(np.sqrt(max(np.sum(np.abs(a) ** 2) - np.sum(np.abs(diagonal) ** 2), 0.0) / a.shape[0]))
        del a
        obj = projected if self.readout == "projection" else diagonal
        attrs = {"lr": _step(self.lr, self.optimizer), "batch_size": None, "final_loss": losses[-1],
                 "initial_loss": losses[0], "losses": [float(v) for v in losses],
                 "seconds_optimisation": time.perf_counter() - t0, "offdiagonal_rms": a_off}
        return obj, ill, origin, attrs

"""The earlier entry point of the distributed reconstruction, kept for scripts that use it: a thin wrapper on
:func:`flowtie_dask.runner.reconstruct` and the method registry (:mod:`flowtie_dask.methods`).

New code builds a method with :func:`flowtie_dask.methods.get_method` and calls the runner directly.
"""

from __future__ import annotations

from typing import Any, Callable

from .methods import get_method
from .methods.base import Method, Needs
from .results import ReconstructionResult
from .runner import WHOLE_SCAN_BYTES, reconstruct
from .runner.graph import accumulate as _accumulate_parts
from .runner.tasks import tile_task as _tile_task
from .quality import bright_field_disk, read_checked
from .runner.tiles import plan_tiles
from .store import ScanStore

__all__ = ["ReconstructionResult", "WHOLE_SCAN_BYTES", "bright_field_disk", "plan_tiles", "read_checked",
           "reconstruct_store", "tile_task"]


class CallableMethod(Method):
    """A plain phase function ``f(intensity, geometry, *, boundary) -> (i0, phase)`` as a ``"tile"`` method
    (or a ``"field"`` one when it also has ``field``, as :class:`~flowtie_dask.model.inference.FlowTIEPhase`
    has); its optional ``check`` and ``receptive_field`` are used as a method's ``check`` and ``needs``."""

    name = "custom"

    def __init__(self, fn: Callable):
        self.fn = fn
        self.kind = "field" if hasattr(fn, "field") else "tile"

    def identity(self) -> tuple:
        return ("custom", type(self.fn).__name__, getattr(self.fn, "path", None), getattr(self.fn, "symmetry", None))

    def attrs(self) -> dict:
        return {"method": getattr(self.fn, "__name__", "custom"), "model": getattr(self.fn, "path", None),
                "symmetry": getattr(self.fn, "symmetry", "none")}

    def needs(self, geometry) -> Needs:
        return Needs(halo=2 * int(getattr(self.fn, "receptive_field", 0)))

    def check(self, geometry) -> None:
        if hasattr(self.fn, "check"):
            self.fn.check(geometry)

    def phase(self, intensity, geometry, *, boundary: str):
        return self.fn(intensity, geometry, boundary=boundary)

    def field(self, intensity, geometry):
        return self.fn.field(intensity, geometry)


def _as_method(phase_method) -> Method:
    return phase_method if isinstance(phase_method, Method) else CallableMethod(phase_method)


def tile_task(path: str, geometry, tile: dict, *, periodic: bool, phase_method: Callable | None = None,
              device: str = "cpu", **kw):
    """:func:`flowtie_dask.runner.tasks.tile_task` with a plain phase function (default TIE)."""
    method = get_method("tie") if phase_method is None else _as_method(phase_method)
    return _tile_task(path, geometry, tile, method=method, periodic=periodic, device=device, **kw)


def _accumulate(shape, *parts):
    return _accumulate_parts(shape, *parts)


def reconstruct_store(
    store: str | ScanStore,
    *,
    method: str = "tie",
    tile_size: int | tuple[int, int] | str | None = "auto",
    halo: int = 16,
    periodic: bool | None = None,
    eps: float = 1e-3,
    client: Any = None,
    progress: bool = True,
    device: str = "cpu",
    phase_method: Callable | None = None,
    model: str | None = None,
    integration: str = "auto",
    symmetry: str = "none",
    cache: str | None = None,
    keep_fields: bool = False,
) -> ReconstructionResult:
    """Reconstruct a scan store with a method named ``method`` (see :func:`flowtie_dask.runner.reconstruct`).

    Parameters
    ----------
    method : str
        A registered method (``tie``, ``flowtie``, ``icom``, ``gd``, ``gd-dense``).
    phase_method : callable, optional
        A plain phase function used instead of ``method`` (a ``"tile"`` method; a ``"field"`` one when it
        has ``field``).
    model, symmetry : optional
        FlowTIE's options.
    Everything else
        As :func:`flowtie_dask.runner.reconstruct`.

    Returns
    -------
    ReconstructionResult
    """
    if phase_method is not None:
        if symmetry != "none":
            raise ValueError(f"symmetry={symmetry!r} averages FlowTIE predictions: use it with method='flowtie'")
        m = _as_method(phase_method)
    else:
        options = {}
        if model is not None:
            options["model"] = model
        if symmetry != "none":
            if method != "flowtie":
                raise ValueError(f"symmetry={symmetry!r} averages FlowTIE predictions: use it with method='flowtie'")
            options["symmetry"] = symmetry
        m = get_method(method, **options)
    return reconstruct(store, m, tile_size=tile_size, halo=halo, periodic=periodic, eps=eps, client=client,
                       progress=progress, device=device, integration=integration, cache=cache,
                       keep_fields=keep_fields)

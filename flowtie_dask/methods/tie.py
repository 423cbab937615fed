"""Classical TIE per detector pixel (DESIGN §3): the probe-frame phase of every pattern, on one tile (with its halo)
or, on several tiles, solved over the whole scan per block of detector rows (exact: tiled = whole-scan)."""

from __future__ import annotations

from ..backend import get_array_module
from ..reconstruct import tie_phase_of_tile
from ..tie import defocus_derivative, mirror_row_ranges, tie_phase
from . import register
from .base import Method, Needs, check_consistency, consistency_option

__all__ = ["TIE"]


@register
class TIE(Method):
    """Transport of intensity over the scan for every detector pixel, solved by FFT (tiled, distributed).

    A field method: on several tiles each tile's field is ∂I/∂C10 and I₀ of its own positions (pointwise, so
    the tiles are read without a halo), and the TIE is solved over the whole scan for each block of detector
    rows (:meth:`integrate`, with the rows their q → −q images need on a non-periodic scan): the tiled result
    equals the whole-scan one. On one tile :meth:`phase` solves it within the (haloed) tile.
    """

    name = "tie"
    summary = "classical TIE per detector pixel (tiled, distributed)"
    backends = ("numpy", "cupy")
    kind = "field"
    field_i0 = 1  # the field is (∂I/∂C10, I₀)
    options = (consistency_option(),)

    def __init__(self, *, eps: float = 1e-3, consistency: int = 0):
        if not eps > 0:
            raise ValueError(f"eps must be > 0 (relative dark-field regulariser), got {eps}")
        self.eps = float(eps)
        self.consistency = check_consistency(consistency)

    def identity(self) -> tuple:
        return (self.name, self.eps, self.consistency)

    def attrs(self) -> dict:
        return {"method": self.name, "model": None, "symmetry": "none", "consistency": self.consistency}

    def needs(self, geometry) -> Needs:
        """No halo for the field (it is pointwise); the tile path's halo is the runner's."""
        return Needs(field_halo=0)

    def phase(self, intensity, geometry, *, boundary: str):
        """See :meth:`Method.phase`; (3, hx, hy, Qx, Qy) → i0, phase (hx, hy, Qx, Qy) in rad."""
        return tie_phase_of_tile(intensity, geometry, boundary=boundary, eps=self.eps)

    def field(self, intensity, geometry, *, interior=None, own=False):
        """(3, tx, ty, Qx, Qy) → i0 (tx, ty, Qx, Qy) and the field (∂I/∂C10 in 1/Å, I₀), (2, tx, ty, Qx, Qy) (of
        the ``interior`` positions only when given: pointwise, so read from those alone). With ``own`` (the caller
        gives up ``intensity``) the field may be written over it and returned as a view of it."""
        if interior is not None:
            intensity = intensity[:, interior[0], interior[1]]
        xp = get_array_module(intensity)
        if own and geometry.focus_index == 1 and intensity.flags.c_contiguous:
            # the difference over the first scan, before the focus: the field is a view of the block (no new
            # buffer of 2/3 its size, whose pages each tile would fault in again)
            field = intensity[:2]
        else:
            field = xp.empty((2, *intensity.shape[1:]), dtype=intensity.dtype)
        _, i0 = defocus_derivative(intensity, geometry.c10, out=field)
        return i0, field

    def field_rows(self, rows, geometry, *, boundary: str):
        """A non-periodic scan's mirror images read the rows of −q_x too (:func:`~flowtie_dask.tie.mirror_row_ranges`)."""
        if boundary != "mirror":
            return (tuple(rows),)
        return mirror_row_ranges(rows, geometry.detector_shape[0], geometry.detector_center[0])

    def field_summary(self, total, count: int) -> float:
        """The largest scan-mean I₀ of the detector's pixels (the ``eps`` clip is relative to it)."""
        return float(total[1].max() / count)

    def integrate(self, field, geometry, *, boundary: str, row0, rows, summary=None):
        """The TIE of detector ``rows`` over the whole scan (see :meth:`Method.integrate`), without P̃(q)."""
        xp = get_array_module(field)
        qx, qy = geometry.q_vectors(xp)
        return tie_phase(field[0], field[1], qx=qx, qy=qy, wavelength=geometry.wavelength, step=geometry.scan_step,
                         boundary=boundary, center=geometry.detector_center, eps=self.eps, row0=row0,
                         rows=tuple(rows), ibar_max=summary).astype(xp.float32)

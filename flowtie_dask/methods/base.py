"""The reconstruction-method protocol: what a method declares and the pure array functions it implements.

In the spirit of LiberTEM's UDFs, a method is one small class. It **declares**

* ``name`` and ``summary`` (the CLI's ``--method`` choice and its help come from them),
* ``backends`` it runs on (``"numpy"``, ``"cupy"``, ``"torch"``),
* ``kind``, i.e. which passes it has:

  ``"tile"``    one pass: the probe-frame phase of every pattern of a haloed tile
                (:meth:`Method.phase`), projected onto the object by the runner (TIE);
  ``"field"``   two passes: a field per tile (:meth:`Method.field`), solved over the whole scan per block of
                detector rows (:meth:`Method.integrate`; default: the field is a phase gradient and is
                integrated), then projected (FlowTIE, and TIE, whose field is ∂I/∂C10 and I₀, on several
                tiles; on one tile the runner calls :meth:`Method.phase` on it, like ``"tile"``);
  ``"reduce"``  a per-pattern reduction of every tile's interior (:meth:`Method.reduce`), the partials
                merged and finalised into the object by the method (:meth:`Method.finalize`) (iCoM);
  ``"whole"``   needs the whole scan at once (:meth:`Method.run_whole`) (gradient descent);

* what it needs of the scan (:meth:`Method.needs`: a halo in scan positions, or the whole scan),
* whether it takes a detector turned against the scan without resampling the patterns (``rotates_windows``),

and **implements** those functions on arrays only — no dask, no zarr inside. The runner
(:mod:`flowtie_dask.runner`) reads the tiles, runs the functions inline, on Dask threads, on a cluster or
on dask-cuda workers unchanged, sums the partials, integrates, and writes the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..consistency import DEFAULT_ITERATIONS
from ..integrate import integrate_gradient, zero_mean_gradient
from ..tie import window_rows

__all__ = ["KINDS", "Method", "Needs", "Option", "check_consistency", "consistency_option"]

KINDS = ("tile", "field", "reduce", "whole")


@dataclass(frozen=True)
class Needs:
    """What a method needs of the scan.

    Attributes
    ----------
    halo : int
        Scan positions it must see around each tile (the runner reads at least this many).
    whole_scan : bool
        It needs every scan position at once (no tiling).
    defocus : tuple of int, optional
        Whole-scan and reduction methods: the scans they read (indices in the store's order, as
        ``geometry.c10``); None: all three. Tile and field methods always get all three.
    memory : int
        Whole-scan methods: bytes it needs at least on its device, the scans included (the runner refuses
        the run before reading anything when they are not available).
    field_halo : int, optional
        Field methods on the global path: the halo the field stage needs (None: ``halo``; 0 for a field that
        is a pointwise function of the patterns, so the tiles are read without overlap).
    """

    halo: int = 0
    whole_scan: bool = False
    defocus: tuple[int, ...] | None = None
    memory: int = 0
    field_halo: int | None = None


@dataclass(frozen=True)
class Option:
    """A method option: a keyword-only constructor argument, offered by the CLI as ``--NAME``.

    Attributes
    ----------
    name : str
        The keyword (the flag replaces ``_`` by ``-``).
    help : str
        Help text, with units.
    type : callable
        Converts the command-line text (``int``, ``float``, ``str``; range checks belong to the method).
    choices : tuple, optional
    metavar : str, optional
    input_path : bool
        The value is an input file or folder (never written over by the command's output).
    """

    name: str
    help: str
    type: Any = str
    choices: tuple | None = None
    metavar: str | None = None
    input_path: bool = False


def consistency_option() -> Option:
    """The ``consistency`` option of the methods the runner projects (TIE, FlowTIE)."""
    return Option("consistency", "diffraction-power consistency iterations of the projection: each detector ring's "
                  "exit-wave amplitudes scaled until the object reproduces the measured mean intensity of that ring "
                  f"(default: FlowTIE {DEFAULT_ITERATIONS}, TIE 0; 0: one projection, as the paper)", type=int,
                  metavar="N")


def check_consistency(value) -> int:
    """``value`` as a number of consistency iterations; ``ValueError`` naming the option otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or int(value) != value or value < 0:
        raise ValueError(f"consistency must be an integer ≥ 0 (iterations; 0: one projection), got {value!r}")
    return int(value)


class Method:
    """Base class of reconstruction methods (see the module docstring).

    Subclasses set the class attributes and implement the functions of their ``kind``; options are
    keyword-only constructor arguments (the CLI passes the flags the user gave, by the same names).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    backends: ClassVar[tuple[str, ...]] = ("numpy",)
    kind: ClassVar[str] = "tile"
    #: Options the CLI offers for this method (each a constructor keyword).
    options: ClassVar[tuple[Option, ...]] = ()
    #: The method takes a detector turned against the scan as it was recorded: its functions use
    #: ``geometry.q_labels``, ``probe_spectrum`` and ``window_rotation`` (the runner projects turned windows), so
    #: no pattern is resampled (:meth:`ReconstructionGeometry.from_metadata`, ``rotate_windows``).
    rotates_windows: ClassVar[bool] = False
    #: On a scan with shot noise the runner low-passes the scans at their band limit for this method by default
    #: (``reconstruct(band_limit="auto")``, :mod:`flowtie_dask.bandlimit`).
    band_limits_noise: ClassVar[bool] = False
    #: A field method whose field holds the tile's in-focus intensity (oriented, checked and repaired as read) in
    #: this channel: the global path through files projects from it instead of reading the focus scan again.
    field_i0: ClassVar[int | None] = None
    #: Diffraction-power consistency iterations of the runner's projection for this method (tile and field kinds;
    #: :mod:`flowtie_dask.consistency`); 0: one projection. TIE and FlowTIE take it as an option.
    consistency: int = 0

    def needs(self, geometry) -> Needs:
        """What this method needs of a scan with this geometry (default: nothing beyond the tile)."""
        return Needs()

    def check(self, geometry) -> None:
        """Raise ``ValueError`` (one line) when the method cannot reconstruct a scan with this geometry."""

    def identity(self) -> tuple:
        """Deterministic description of the method and its options (Dask keys, resume records)."""
        return (self.name,)

    def attrs(self) -> dict[str, Any]:
        """Attributes recorded in the result (method name and options)."""
        return {"method": self.name}

    # kind "tile" ----------------------------------------------------------------------------------
    def phase(self, intensity: Any, geometry, *, boundary: str):
        """Probe-frame phase of every pattern of an oriented haloed tile.

        Parameters
        ----------
        intensity : ndarray, shape (3, hx, hy, Qx, Qy)
            Oriented, centred patterns.
        geometry : ReconstructionGeometry
        boundary : {"periodic", "mirror"}

        Returns
        -------
        i0 : ndarray, shape (hx, hy, Qx, Qy)
            In-focus intensity.
        phase : ndarray, shape (hx, hy, Qx, Qy)
            rad.
        """
        raise NotImplementedError(f"method {self.name!r} has no per-tile phase")

    # kind "field" ---------------------------------------------------------------------------------
    def field(self, intensity: Any, geometry, *, interior=None, own: bool = False):
        """The field of every pattern of an oriented haloed tile (what :meth:`integrate` solves).

        ``interior`` (two slices of the tile's scan axes) asks for those positions' field only (the halo is
        context), which a method may return without making the rest. ``own``: the caller gives ``intensity``
        up, so the method may write over it and return views of it (the runner's field stage does).

        Returns
        -------
        i0 : ndarray, shape (hx, hy, Qx, Qy)
        g : ndarray, shape (2, hx, hy, Qx, Qy), or (2, ix, iy, Qx, Qy) of the ``interior``
            By default forward differences over the scan axes of the probe-frame phase, rad/Å.
        """
        raise NotImplementedError(f"method {self.name!r} predicts no gradient field")

    def field_rows(self, rows: tuple[int, int], geometry, *, boundary: str) -> tuple[tuple[int, int], ...]:
        """Detector rows of the whole scan's field that :meth:`integrate` of ``rows`` reads, as disjoint ascending
        ranges [start, stop) (default: ``rows`` only)."""
        return (tuple(rows),)

    def field_summary(self, total: Any, count: int) -> float | None:
        """A number that :meth:`integrate` needs of the whole scan's field, from ``total``, the field summed over
        all ``count`` scan positions, shape (2, Qx, Qy), float64 (each tile's field stage adds its own positions'
        sum, so no pass over the whole field is made for it); default None (then no sums are made)."""
        return None

    def integrate(self, field: Any, geometry, *, boundary: str, row0, rows: tuple[int, int],
                  summary: float | None = None):
        """Stage 2 of the global path: the probe-frame phase of detector ``rows`` over the whole scan.

        Parameters
        ----------
        field : ndarray, shape (2, Rx, Ry, W, Qy)
            The whole scan's field on the W detector rows :meth:`field_rows` asked.
        row0 : int or sequence of int
            Those rows: ``row0 … row0 + W − 1`` for an int, else the W rows listed
            (:func:`~flowtie_dask.tie.window_rows`).
        boundary : {"periodic", "mirror"}
        rows : (int, int)
            Detector rows [start, stop) to return.
        summary : float, optional
            :meth:`field_summary` of the whole field.

        Returns
        -------
        ndarray, shape (Rx, Ry, stop − start, Qy), float32
            rad, less the probe's phase arg P̃(q) (the runner adds it back when projecting). Default: the
            field is the forward-difference gradient; a non-periodic scan's field less its mean per detector
            pixel (:func:`~flowtie_dask.integrate.zero_mean_gradient`), integrated.
        """
        start = int(np.searchsorted(window_rows(row0, field.shape[3]), rows[0]))
        g = field[:, :, :, start:start + rows[1] - rows[0]]
        gx, gy = zero_mean_gradient(g[0], g[1], boundary=boundary)
        return integrate_gradient(gx, gy, step=geometry.scan_step, kind="forward", boundary=boundary).astype(np.float32)

    # kind "reduce" --------------------------------------------------------------------------------
    def reduce(self, intensity: Any, geometry) -> dict:
        """Per-pattern reduction of the oriented patterns of a tile's interior, (S, tx, ty, Qx, Qy) of the
        scans ``needs(geometry).defocus`` (all three by default) → a dict of host arrays of shape (..., tx, ty)."""
        raise NotImplementedError(f"method {self.name!r} has no reduction")

    def finalize(self, merged: dict, geometry, *, periodic: bool):
        """The object from the merged reductions (each array of shape (..., Rx, Ry)).

        Returns
        -------
        phase, amplitude, illumination : ndarray, shape (Nx, Ny)
        pixel_size : (float, float)
            Å.
        origin : (float, float)
            Å, relative to the first scan position.
        """
        raise NotImplementedError(f"method {self.name!r} has no finalize step")

    # kind "whole" ---------------------------------------------------------------------------------
    def run_whole(self, intensity: Any, geometry, *, device: str = "cpu", progress=None):
        """Reconstruct from the whole scan.

        Parameters
        ----------
        intensity : ndarray, shape (S, Rx, Ry, Qx, Qy), float32 (host), C-contiguous
            Oriented, centred, checked patterns of the scans ``needs(geometry).defocus`` (in that order);
            the method may overwrite it (nothing else holds it).
        geometry : ReconstructionGeometry
            ``geometry.periodic`` is the periodicity the run uses.
        device : {"cpu", "gpu"}
        progress : callable, optional
            ``progress(done, total, loss)`` after each step (the runner draws the bar).

        Returns
        -------
        obj : ndarray, shape (Nx, Ny), complex
            The object O on ``geometry.object_grid(periodic=geometry.periodic)`` (pixel ``geometry.pixel`` Å).
        illumination : ndarray, shape (Nx, Ny)
            Σ_r̂ |P(r − r̂)|² of the in-focus probe (where O is determined).
        origin : (float, float)
            Å, of the object grid relative to the first scan position.
        attrs : dict
            What the run found (losses, steps, timings), added to the result's attributes.
        """
        raise NotImplementedError(f"method {self.name!r} does not run on the whole scan")

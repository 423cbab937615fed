"""Detector and object-grid geometry of a reconstruction, taken from a scan's metadata.

The detector records centred patterns (zero frequency near pixel N//2), possibly cropped, possibly
rotated or transposed relative to the scan, with the bright-field disk centred at
``detector_center``. After :func:`orient_patterns` the detector axes are the scan axes, and

* detector pixel j sits at q_j = (j − c)·dq (1/Å) — the true scattering vector;
* the exit-wave window has pixel Δu = 1/(Q·dq) Å and Q pixels (u = 0 at FFT index 0);
* the object grid has pixel Δu; a scan position r̂ maps to the object pixel (r̂ − origin)/Δu.

No dask or zarr here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from .backend import get_array_module
from .physics.constants import wavelength
from .physics.optics import Aberrations, probe_fourier

__all__ = ["ReconstructionGeometry", "orient_patterns", "recorded_descan", "DESCAN_MIN_PX"]

#: A recorded descan that moves the beam less than this (detector pixels, over the whole scan) is not applied:
#: the interpolation would cost more than it mends.
DESCAN_MIN_PX = 0.1


def recorded_descan(metadata) -> tuple:
    """The descan slopes ((s00, s01), (s10, s11)) in detector pixels per scan step recorded by ``calibrate`` in
    ``metadata.calibration["descan"]``, or () when there is none or its span is below :data:`DESCAN_MIN_PX`."""
    entry = (getattr(metadata, "calibration", None) or {}).get("descan")
    if not isinstance(entry, dict) or not isinstance(entry.get("value"), dict):
        return ()
    value = entry["value"]
    try:
        slope = tuple(tuple(float(v) for v in row) for row in value["slope_px_per_step"])
        span = float(value["span_px"])
    except (KeyError, TypeError, ValueError):
        return ()
    return slope if span >= DESCAN_MIN_PX and len(slope) == 2 else ()


def orient_patterns(patterns: Any, *, rotation: float = 0.0, transpose: bool = False, order: int = 3) -> Any:
    """Bring detector axes onto the scan axes (py4DSTEM's QR_rotation / QR_flip convention).

    A detector vector q_det maps to the scan frame as q_scan = R(θ)·S·q_det, with S the swap of the
    two detector axes when ``transpose`` (py4DSTEM's ``QR_flip``) and R(θ) the rotation by θ =
    ``rotation`` degrees from the first detector axis towards the second. The patterns are resampled
    accordingly: transposed, then their content rotated by θ. Multiples of 90° are exact
    (``rot90``); other angles interpolate by splines of ``order`` (cubic by default: linear interpolation
    blurs the bright-field edge, which the TIE's per-pixel derivative feels) about the array centre, and
    non-negative input (intensities) stays non-negative.

    Parameters
    ----------
    patterns : ndarray, shape (..., Qx, Qy)
    rotation : float
        θ in degrees.
    transpose : bool
    order : int
        Spline order for angles off the quarter-turns (1 = linear).

    Returns
    -------
    ndarray, shape (..., Qx', Qy')
        Axes swapped when an odd number of quarter-turns and transposes is applied.
    """
    xp = get_array_module(patterns)
    if transpose:
        patterns = xp.swapaxes(patterns, -1, -2)
    r = float(rotation) % 360.0
    quarter = r / 90.0
    if abs(quarter - round(quarter)) < 1e-9:
        k = int(round(quarter)) % 4
        if k:
            patterns = xp.rot90(patterns, k=k, axes=(-2, -1))
    else:
        from scipy import ndimage

        host = patterns if xp is np else patterns.get()
        flat = host.reshape((-1,) + host.shape[-2:])
        nonnegative = order > 1 and bool((flat >= 0).all())  # intensities: no spline undershoot below 0
        out = np.empty(flat.shape, dtype=flat.dtype if flat.dtype.kind == "f" else np.float64)
        for start in range(0, len(flat), 1024):  # bounded working memory (the spline works in float64)
            part = ndimage.rotate(flat[start:start + 1024], r, axes=(2, 1), reshape=False, order=order,
                                  mode="constant")
            out[start:start + 1024] = np.maximum(part, 0) if order > 1 and nonnegative else part
        patterns = xp.asarray(out.reshape(host.shape))
    return xp.ascontiguousarray(patterns)


def _oriented_detector(shape, center, rotation, transpose):
    """Shape, zero-frequency pixel and axis swap of a detector after :func:`orient_patterns`.

    The centre is mapped by fitting the affine map between output and input pixel coordinates on
    oriented coordinate images (exact for quarter-turns and transposes; linear interpolation of a
    linear function is exact away from the border for other angles).
    """
    ii, jj = np.meshgrid(np.arange(shape[0], dtype=float), np.arange(shape[1], dtype=float), indexing="ij")
    stack = np.stack([ii, jj, np.ones_like(ii)])
    out = orient_patterns(stack, rotation=rotation, transpose=transpose, order=1)
    oi, oj = np.meshgrid(np.arange(out.shape[1], dtype=float), np.arange(out.shape[2], dtype=float), indexing="ij")
    valid = out[2] > 0.999
    design = np.stack([oi[valid], oj[valid], np.ones(valid.sum())], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.stack([out[0][valid], out[1][valid]], axis=1), rcond=None)
    a, b = coef[:2].T, coef[2]  # input = a @ output + b
    new_center = np.linalg.solve(a, np.asarray(center, dtype=float) - b)
    swapped = abs(a[0, 0]) < abs(a[0, 1])
    new_center = np.round(new_center, 9) + 0.0  # exact for quarter-turns and transposes
    return (int(out.shape[1]), int(out.shape[2])), (float(new_center[0]), float(new_center[1])), bool(swapped)


@dataclass(frozen=True)
class ReconstructionGeometry:
    """Sampling of detector, exit-wave window and object grid for one scan (Å, 1/Å, eV, mrad).

    Attributes
    ----------
    energy, semiangle, aperture_edge : float
    focus_c10 : float
        C10 of the in-focus scan (Å).
    aberrations : dict
        C12, phi12, C30 of the probe.
    scan_shape : (Rx, Ry)
    scan_step : (sx, sy)
        Å.
    detector_shape : (Qx, Qy)
        After orientation.
    detector_sampling : (dqx, dqy)
        1/Å.
    detector_center : (cx, cy)
        Pixel of zero scattering angle (may be fractional).
    periodic : bool
        The scan covers whole periods of a periodic object.
    c10 : tuple of 3 floats
        C10 of the three scans (Å), in the store's order.
    rotation, transpose :
        Detector orientation as stored (undone by :meth:`orient`).
    scan_drift : three (float, float)
        Å: where each scan lies against the focus scan (``ScanMetadata.scan_drift``; the runner resamples the
        scans onto the focus grid by it).
    scan_offset : (int, int)
        Store index of this geometry's first scan position (the runner works on the common area of the three
        scans, a window of the store's scan); (0, 0) for the whole scan.
    store_scan_shape : (int, int) or None
        The store's whole scan when this geometry is a window of it (None: ``scan_shape``).
    descan : ((float, float), (float, float)) or ()
        The beam's drift over the scan, detector pixels (stored axes) per scan step, ``descan[k][a]`` for detector
        axis k along scan axis a, about the scan's middle (``flowtie-dask calibrate``); the runner moves every
        pattern back by it. Empty when none was recorded or it moves the beam less than :data:`DESCAN_MIN_PX`.
    window_rotation : float
        Degrees of the detector's turn against the scan that :meth:`orient` leaves to the methods (0 unless
        ``from_metadata(rotate_windows=True)``): the patterns stay on the detector grid and the exit-wave windows
        (:func:`~flowtie_dask.projection.rotate_windows`), the pixels' scattering vectors (:meth:`q_labels`) and
        the probe (:meth:`probe_spectrum`) are turned instead — no pattern is resampled.
    scan_band_limit : float
        1/Å: the runner low-passes the scans over the scan axes at this frequency when reading them (0: not;
        :mod:`flowtie_dask.bandlimit`, set by ``reconstruct(band_limit=...)``).
    electrons_per_pattern : float
        Mean electrons per pattern of the focus scan (:func:`~flowtie_dask.store.electrons_per_pattern`: a store of
        counts, or a simulation with shot noise); 0 for noise-free or unknown. A dose-aware FlowTIE model reads it.
    """

    energy: float
    semiangle: float
    aperture_edge: float
    focus_c10: float
    aberrations: dict
    scan_shape: tuple[int, int]
    scan_step: tuple[float, float]
    detector_shape: tuple[int, int]
    detector_sampling: tuple[float, float]
    detector_center: tuple[float, float]
    periodic: bool = False
    c10: tuple = (0.0, 0.0, 0.0)
    rotation: float = 0.0
    transpose: bool = False
    scan_drift: tuple = ((0.0, 0.0), (0.0, 0.0), (0.0, 0.0))
    scan_offset: tuple = (0, 0)
    store_scan_shape: tuple | None = None
    descan: tuple = ()
    electrons_per_pattern: float = 0.0
    window_rotation: float = 0.0
    scan_band_limit: float = 0.0

    @classmethod
    def from_metadata(cls, metadata, *, scan_shape, detector_shape,
                      rotate_windows: bool = False) -> "ReconstructionGeometry":
        """Geometry of a scan store (its :class:`~flowtie_dask.store.ScanMetadata` and array shape).

        Rotation by an odd multiple of 90° or a transpose swaps the detector axes; the sampling and
        centre follow. With ``rotate_windows`` (methods that take each pixel's q and project windows: FlowTIE,
        iCoM), :meth:`orient` applies only the transpose and the nearest quarter-turns, exactly, and the rest
        of the turn (|θ| ≤ 45°) becomes ``window_rotation`` — on a square detector of square pixels; otherwise
        the patterns are resampled as before.
        """
        m = metadata
        rotation, rest = float(m.detector_rotation), 0.0
        if rotate_windows and detector_shape[-1] == detector_shape[-2] and \
                abs(m.detector_sampling[0] - m.detector_sampling[1]) <= 1e-6 * m.detector_sampling[0]:
            quarter = 90.0 * round(rotation / 90.0)
            rotation, rest = quarter, rotation - quarter
            rest = 0.0 if abs(rest) < 1e-9 else rest
        shape, center, swapped = _oriented_detector(tuple(detector_shape), tuple(m.detector_center),
                                                    rotation, m.detector_transpose)
        dq = tuple(m.detector_sampling)[::-1] if swapped else tuple(m.detector_sampling)
        quarter = (m.detector_rotation % 360.0) / 90.0
        if abs(quarter - round(quarter)) > 1e-9 and abs(dq[0] - dq[1]) > 1e-6 * dq[0]:
            raise ValueError("a detector rotated by other than a multiple of 90° needs square pixels "
                             f"(got {dq[0]:.5g} × {dq[1]:.5g} 1/Å); resample the patterns first")
        c10 = sorted(m.c10)[1]
        return cls(
            energy=m.energy, semiangle=m.semiangle, aperture_edge=m.aperture_edge, focus_c10=c10,
            aberrations=dict(m.aberrations), scan_shape=tuple(scan_shape), scan_step=tuple(m.scan_step),
            detector_shape=shape, detector_sampling=dq, detector_center=center,
            periodic=bool(m.periodic), c10=tuple(m.c10), rotation=rotation,
            transpose=bool(m.detector_transpose), scan_drift=tuple(getattr(m, "scan_drift", ((0.0, 0.0),) * 3)),
            descan=recorded_descan(m), window_rotation=rest,
        )

    def orient(self, patterns: Any) -> Any:
        """Undo the stored detector rotation/transpose (see :func:`orient_patterns`)."""
        if self.rotation % 360.0 == 0 and not self.transpose:
            return patterns
        return orient_patterns(patterns, rotation=self.rotation, transpose=self.transpose)

    @property
    def focus_index(self) -> int:
        """Index (in the store's order, as ``c10``) of the in-focus scan: the middle C10 of the three."""
        return int(np.argsort(np.asarray(self.c10, dtype=float), kind="stable")[1])

    @property
    def wavelength(self) -> float:
        """λ in Å."""
        return wavelength(self.energy)

    @property
    def pixel(self) -> tuple[float, float]:
        """Exit-wave / object pixel Δu = 1/(Q·dq) in Å."""
        return tuple(1.0 / (n * d) for n, d in zip(self.detector_shape, self.detector_sampling))

    @property
    def frequency_offset(self) -> tuple[float, float]:
        """q_true − fftfreq on the ifftshifted detector grid, 1/Å: (Q//2 − c)·dq."""
        return tuple((n // 2 - c) * d for n, c, d in zip(self.detector_shape, self.detector_center,
                                                          self.detector_sampling))

    def q_vectors(self, xp: ModuleType = np):
        """True scattering vectors of the (oriented, centred) detector pixels.

        Returns
        -------
        qx : ndarray, shape (Qx,)
        qy : ndarray, shape (Qy,)
            1/Å, q_j = (j − c)·dq.
        """
        return tuple(xp.asarray((np.arange(n) - c) * d) for n, c, d in
                     zip(self.detector_shape, self.detector_center, self.detector_sampling))

    def q_labels(self, xp: ModuleType = np):
        """Scattering vector of every detector pixel in the scan frame: :meth:`q_vectors` turned by
        ``window_rotation`` (q_scan = R(θ)·q, R(θ) turning the first axis towards the second).

        Returns
        -------
        ndarray, shape (Qx·Qy, 2), float64
            1/Å, pixels in C order.
        """
        qx, qy = (np.asarray(v, dtype=np.float64) for v in self.q_vectors(np))
        q = np.stack(np.meshgrid(qx, qy, indexing="ij"), -1).reshape(-1, 2)
        return xp.asarray(np.stack(self.to_scan_frame(q[:, 0], q[:, 1]), axis=-1))

    def to_scan_frame(self, vx: Any, vy: Any):
        """Vectors (components along the oriented detector's axes, any shape) turned by ``window_rotation`` into
        the scan frame: R(θ)·v, R(θ) turning the first axis towards the second (unchanged when θ = 0)."""
        if not self.window_rotation:
            return vx, vy
        c, s = math.cos(math.radians(self.window_rotation)), math.sin(math.radians(self.window_rotation))
        return c * vx - s * vy, s * vx + c * vy

    def probe_spectrum(self, xp: ModuleType = np):
        """Focused probe P̃ on the detector grid, **centred** like the patterns (in the detector's frame when
        ``window_rotation`` is set).

        Returns
        -------
        ndarray, shape (Qx, Qy), complex128
            Σ|P̃|² = 1 (the scale of a unit-sum pattern), zero frequency at (Q//2, Q//2) of the layout and
            evaluated at the true q (detector-centre offset included).
        """
        ab = {k: float(v) for k, v in self.aberrations.items()}
        if self.window_rotation:  # on a detector turned by θ against the scan the astigmatism's axis is at φ12 − θ
            ab["phi12"] = ab.get("phi12", 0.0) - math.radians(self.window_rotation)
        ab = Aberrations(C10=self.focus_c10, **ab)
        p = probe_fourier(self.detector_shape, self.pixel, energy=self.energy, semiangle=self.semiangle,
                          aberrations=ab, edge=self.aperture_edge, xp=xp, offset=self.frequency_offset)
        p = p / math.sqrt(self.detector_shape[0] * self.detector_shape[1])
        return xp.fft.fftshift(p)

    def object_grid(self, *, periodic: bool | None = None):
        """Shape and origin of the stitched object.

        Parameters
        ----------
        periodic : bool, optional
            Default: the scan's ``periodic`` flag. Periodic objects span exactly one scan period
            (which must be a whole number of pixels); others span the scan plus one window.

        Returns
        -------
        shape : (Nx, Ny)
        origin : (x0, y0)
            Position of object pixel (0, 0) relative to the first scan position, Å.
        """
        periodic = self.periodic if periodic is None else periodic
        if periodic:
            n = []
            for r, s, du in zip(self.scan_shape, self.scan_step, self.pixel):
                v = r * s / du
                if abs(v - round(v)) > 1e-3:
                    raise ValueError(
                        f"the scan period {r * s:.4f} Å is not a whole number of exit-wave pixels ({du:.4f} Å); "
                        "reconstruct with periodic=False"
                    )
                n.append(int(round(v)))
            return tuple(n), (0.0, 0.0)
        shape = tuple(int(math.ceil((r - 1) * s / du)) + q + 1 for r, s, du, q in
                      zip(self.scan_shape, self.scan_step, self.pixel, self.detector_shape))
        origin = tuple(-(q // 2) * du for q, du in zip(self.detector_shape, self.pixel))
        return shape, origin

    def positions_px(self, ix: Any, iy: Any, *, periodic: bool | None = None):
        """Object-pixel coordinate of the window centre (u = 0) for scan indices.

        Parameters
        ----------
        ix, iy : ndarray, shape (B,)
            Scan indices.

        Returns
        -------
        ndarray, shape (B, 2), float64
        """
        _, origin = self.object_grid(periodic=periodic)
        xp = get_array_module(ix)
        px = (xp.asarray(ix) * self.scan_step[0] - origin[0]) / self.pixel[0]
        py = (xp.asarray(iy) * self.scan_step[1] - origin[1]) / self.pixel[1]
        return xp.stack([px, py], axis=1).astype(xp.float64)

"""The scan band limit of 4D-STEM data: a low-pass over the scan axes that removes shot noise and no signal.

At a fixed detector pixel q the far field of the probe at r̂ is Ψ(q; r̂) = Σ_k T(q, k)·P̃(k)·e^{−2πi k·r̂}, with T the
specimen's (linear, any thickness) transfer of an incident plane wave k into q and P̃ the probe's spectrum, zero
beyond the aperture |k| ≤ k_α = α/λ (plus half a soft edge). Its intensity I(q; r̂) = |Ψ|² therefore holds no
spatial frequency over r̂ above 2k_α — for every q, every specimen, every defocus (the double-overlap support that
single-sideband ptychography works on). Shot noise is white over r̂, so on a scan sampled finer than 1/(4k_α)
the frequencies between 2k_α and the scan's Nyquist frequency are noise only: removing them is exact for the
signal and lowers the noise variance by the share of the scan's frequency square outside the disk of radius
2k_α (63 % at a 0.17 Å step, 300 kV, 20 mrad).

The filter is 1 up to (1 − ``width``)·2k_α and falls as cos² through ½ at 2k_α to 0 at (1 + ``width``)·2k_α, so
its kernel is short (:func:`band_margin` positions read around a tile, 1/(width·2k_α·step): 17 at 300 kV, 20 mrad
and a 0.17 Å step, give the whole scan's filtered values to 0.1 % rms of the noise removed); the signal it dims lies at the limit, where the two aperture disks barely overlap. The scan
axes are extended evenly (a DCT-II), so a non-periodic scan's edges do not ring.

On the Table 1 crystals (periodic, 64² scans) FlowTIE's phase MSE fell by 5–12 % (thin) and 0.2–6 % (thick) at
10⁵ and 10⁴ e⁻/pattern, and is unchanged without noise (``benchmarks/band_limit.py``).
Kernels run on NumPy or CuPy (``cupyx.scipy.fft``) and never import dask or zarr.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .backend import get_array_module

__all__ = ["DEFAULT_WIDTH", "band_limit", "band_limit_response", "band_margin", "scan_band_limit"]
#: Half-width of the filter's transition, as a fraction of 2k_α.
DEFAULT_WIDTH = 0.175


def scan_band_limit(geometry) -> float:
    """2k_α = 2(α + edge/2)/λ in 1/Å: the highest spatial frequency over the scan of any pattern's pixel.

    Parameters
    ----------
    geometry : ReconstructionGeometry
        ``semiangle`` and ``aperture_edge`` (mrad), ``wavelength`` (Å).
    """
    return 2.0 * (float(geometry.semiangle) + 0.5 * float(geometry.aperture_edge)) * 1e-3 / float(geometry.wavelength)


def band_margin(step: tuple[float, float], cutoff: float, *, width: float = DEFAULT_WIDTH) -> tuple[int, int]:
    """Scan positions to read on each side of a block, per scan axis, so that its filtered values match the whole
    scan's: the filter's reach 1/(width·cutoff) in Å over the step (its transition, 2·width·cutoff wide, sets how
    far the kernel's tails ring).

    Parameters
    ----------
    step : (sx, sy)
        Å.
    cutoff : float
        2k_α, 1/Å.
    width : float
        See :func:`band_limit_response`.

    Returns
    -------
    (int, int)
    """
    return tuple(int(math.ceil(1.0 / (width * float(cutoff) * float(s)))) for s in step)


def band_limit_response(shape: tuple[int, int], step: tuple[float, float], cutoff: float, *,
                        width: float = DEFAULT_WIDTH, periodic: bool = False) -> np.ndarray:
    """The filter on the DCT-II frequencies of a (Rx, Ry) scan block (on its ``rfft2`` frequencies when
    ``periodic``).

    Parameters
    ----------
    shape : (Rx, Ry)
    step : (sx, sy)
        Scan step, Å.
    cutoff : float
        2k_α, 1/Å (:func:`scan_band_limit`).
    width : float
        In (0, 1): the response is 1 up to (1 − width)·cutoff, ½ at cutoff and 0 from (1 + width)·cutoff.

    periodic : bool
        The block is one period of the scan: the response on the frequencies of ``numpy.fft.rfft2``.

    Returns
    -------
    ndarray, shape (Rx, Ry), or (Rx, Ry//2 + 1) when periodic, float64
        Index (i, j) is the frequency (i/(2Rx·sx), j/(2Ry·sy)) of the evenly extended block (periodic: the FFT's).
    """
    if not (cutoff > 0 and math.isfinite(cutoff)):
        raise ValueError(f"cutoff must be a positive frequency in 1/Å, got {cutoff!r}")
    if not 0 < width < 1:
        raise ValueError(f"width must lie in (0, 1), got {width!r}")
    if periodic:
        fx, fy = np.fft.fftfreq(shape[0], float(step[0])), np.fft.rfftfreq(shape[1], float(step[1]))
    else:
        fx = np.arange(shape[0]) / (2.0 * shape[0] * float(step[0]))
        fy = np.arange(shape[1]) / (2.0 * shape[1] * float(step[1]))
    f = np.hypot(fx[:, None], fy[None, :])
    t = np.clip((f - (1.0 - width) * cutoff) / (2.0 * width * cutoff), 0.0, 1.0)
    return np.cos(0.5 * math.pi * t) ** 2


def _dct_module(xp):
    if xp is np:
        import scipy.fft

        return scipy.fft
    import cupyx.scipy.fft

    return cupyx.scipy.fft


def band_limit(block: Any, *, step: tuple[float, float], cutoff: float, width: float = DEFAULT_WIDTH,
               periodic: bool = False, rows_per_pass: int = 8) -> Any:
    """``block`` low-passed over its scan axes at the scan band limit (module docstring).

    Parameters
    ----------
    block : ndarray, shape (D, Rx, Ry, Qx, Qy), float
        Patterns of D scans on one scan grid (NumPy or CuPy).
    step : (sx, sy)
        Scan step, Å.
    cutoff : float
        2k_α, 1/Å (:func:`scan_band_limit`).
    width : float
        See :func:`band_limit_response`.
    periodic : bool
        The block is one whole period of the scan (filtered exactly by its FFT; otherwise evenly extended).
    rows_per_pass : int
        Detector rows transformed at once (bounds the working memory to that share of the block).

    Returns
    -------
    ndarray, same shape, float32 (float64 input stays float64)
        Nothing is filtered when the scan's Nyquist frequency lies below ``(1 − width)·cutoff`` on both axes
        (the block itself is returned).
    """
    xp = get_array_module(block)
    if block.ndim != 5:
        raise ValueError(f"block must have shape (D, Rx, Ry, Qx, Qy), got {block.shape}")
    d, rx, ry, qx, qy = block.shape
    h = band_limit_response((rx, ry), step, cutoff, width=width, periodic=periodic)
    if np.all(h == 1.0):
        return block
    dtype = np.float64 if block.dtype == np.float64 else np.float32
    h = xp.asarray(h.astype(dtype))[:, :, None, None]
    dct = None if periodic else _dct_module(xp)
    out = xp.empty(block.shape, dtype=dtype)
    for s in range(d):
        for r in range(0, qx, max(1, int(rows_per_pass))):
            part = xp.asarray(block[s, :, :, r:r + rows_per_pass], dtype=dtype)
            if periodic:
                c = xp.fft.rfft2(part, axes=(0, 1))
                out[s, :, :, r:r + rows_per_pass] = xp.fft.irfft2(c * h, s=(rx, ry), axes=(0, 1))
            else:
                c = dct.dctn(part, type=2, axes=(0, 1), norm="ortho")
                out[s, :, :, r:r + rows_per_pass] = dct.idctn(c * h, type=2, axes=(0, 1), norm="ortho")
    return out

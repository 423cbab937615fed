"""Exit waves and the A-matrix projection onto the object (DESIGN §4, the paper's Algorithm 2).

Probe-frame exit wave at a scan position: ψ̂(u; r̂) = F⁻¹_q[√I₀(q, r̂)·exp(iφ(q, r̂))](u) ≈ O(r̂ + u)·P(u).
Projection as an overlap-add with the probe:

    O(r) ≈ Σ_r̂ ψ̂(r − r̂; r̂)·P*(r − r̂) / (Σ_r̂ |P(r − r̂)|² + ε),

which on a periodic grid with one scan position per pixel is exactly the diagonal of the paper's
A_pred = F⁻¹ E Pᴴ divided by the illumination (:func:`dense_projection` gives the dense form).
Sub-pixel scan positions are placed exactly by a Fourier shift of the window (spectra are
band-limited by the detector). Kernels run on NumPy or CuPy and never import dask or zarr.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .backend import get_array_module, ifft2

__all__ = ["exit_wave_spectra", "rotate_windows", "shifted_windows", "probe_windows", "overlap_add",
           "divide_illumination", "unwrap", "dense_projection"]


def exit_wave_spectra(i0: Any, phase: Any):
    """Probe-frame far-field waves √I₀·exp(iφ).

    Parameters
    ----------
    i0 : ndarray, shape (..., Qx, Qy)
        In-focus intensities (unit-sum patterns), centred.
    phase : ndarray, shape (..., Qx, Qy)
        Probe-frame phase φ(q, r̂) in rad.

    Returns
    -------
    ndarray, shape (..., Qx, Qy), centred like the patterns
        complex64 for float32 input, complex128 otherwise.
    """
    xp = get_array_module(i0)
    amp = xp.sqrt(xp.clip(i0, 0, None))
    single = amp.dtype == xp.float32 and phase.dtype == xp.float32
    out = xp.empty(amp.shape, dtype=xp.complex64 if single else xp.complex128)
    out.real = amp * xp.cos(phase)
    out.imag = amp * xp.sin(phase)
    return out


def rotate_windows(windows: Any, rotation: float):
    """Real-space windows rotated about u = 0 by three Fourier shears (exact for a band-limited window whose
    content stays inside it; Unser et al., IEEE TIP 4, 1995).

    The content turns by ``rotation`` degrees in the sense of :func:`~flowtie_dask.geometry.orient_patterns`, so
    the windows of patterns left in the detector frame become the windows of the oriented patterns without
    resampling any intensity (a far field turned by θ has its window turned by θ). The exit wave ψ̂ = F⁻¹[√I·e^{iφ}]
    is sampled at its band limit and confined to the window by the probe; the patterns |Ψ|² are not (their
    autocorrelation is twice as wide), which is why turning them costs accuracy.

    Parameters
    ----------
    windows : ndarray, shape (..., Qx, Qy), complex
        In FFT order (u = 0 at index 0).
    rotation : float
        Degrees; |rotation| ≤ 45 keeps the shears short (larger turns: take the quarter-turns exactly first).

    Returns
    -------
    ndarray, same shape, complex
    """
    xp = get_array_module(windows)
    theta = math.radians(float(rotation))
    if theta == 0.0:
        return windows
    qx, qy = windows.shape[-2:]
    ux = xp.asarray(np.fft.fftfreq(qx) * qx)  # signed pixel coordinates in FFT order
    uy = xp.asarray(np.fft.fftfreq(qy) * qy)
    kx, ky = xp.asarray(np.fft.fftfreq(qx)), xp.asarray(np.fft.fftfreq(qy))
    t, s = math.tan(theta / 2), math.sin(theta)
    # out(u) = in(M·u) with M = X(t)·Y(−s)·X(t), the shears X(a): (x, y) → (x + a·y, y), Y(b): (x, y) → (x, y + b·x)
    # in array axes; M is the turn by −θ in orient_patterns' sense (ndimage.rotate over axes (2, 1)). A shear
    # f(x + a·y, y) is the phase ramp exp(2πi·k_x·a·y) along the sheared axis.
    sx = xp.exp(2j * math.pi * t * kx[:, None] * uy[None, :])  # X(t) on (k_x, y)
    sy = xp.exp(-2j * math.pi * s * ux[:, None] * ky[None, :])  # Y(−s) on (x, k_y)
    fft = xp.fft
    w = fft.ifft(fft.fft(windows, axis=-2) * sx, axis=-2)
    w = fft.ifft(fft.fft(w, axis=-1) * sy, axis=-1)
    w = fft.ifft(fft.fft(w, axis=-2) * sx, axis=-2)
    return w.astype(windows.dtype, copy=False)


def shifted_windows(spectra: Any, fractions: Any, *, rotation: float = 0.0):
    """Real-space windows of centred spectra, turned about u = 0 and shifted by a fraction of a pixel.

    Parameters
    ----------
    spectra : ndarray, shape (B, Qx, Qy) or (Qx, Qy), complex
        Centred spectra (zero frequency at Q//2) of unit-sum scale.
    fractions : ndarray, shape (B, 2)
        Sub-pixel shifts f in pixels: the window value at index u is the wave at u − f.
    rotation : float
        Degrees the window content is turned by first (:func:`rotate_windows`; 0: none).

    Returns
    -------
    ndarray, shape (B, Qx, Qy), complex
        Windows in FFT order (u = 0 at index 0), scaled so a unit-sum spectrum gives a unit-norm wave.
    """
    xp = get_array_module(spectra)
    qx, qy = spectra.shape[-2:]
    s = xp.fft.ifftshift(spectra, axes=(-2, -1))
    if rotation:
        s = xp.fft.fft2(rotate_windows(ifft2(s), rotation))
    fractions = xp.asarray(fractions, dtype=xp.float64)
    kx = xp.fft.fftfreq(qx)[None, :]
    ky = xp.fft.fftfreq(qy)[None, :]
    ramp_x = xp.exp(-2j * math.pi * fractions[:, 0:1] * kx)
    ramp_y = xp.exp(-2j * math.pi * fractions[:, 1:2] * ky)
    if bool(xp.any(fractions != 0)):  # whole-pixel shifts (a step of whole pixels) need no ramp
        s = s * ramp_x[:, :, None] * ramp_y[:, None, :]
    return ifft2(s) * math.sqrt(qx * qy)


def probe_windows(probe_spectrum: Any, fractions: Any, *, rotation: float = 0.0):
    """The probe's real-space window at each position's sub-pixel fraction (:func:`shifted_windows` of the probe),
    built once per distinct fraction (scan grids repeat a few).

    Parameters
    ----------
    probe_spectrum : ndarray, shape (Qx, Qy), complex
        Centred, Σ|P̃|² = 1.
    fractions : ndarray, shape (B, 2)
        Sub-pixel shifts in pixels.
    rotation : float
        Degrees the window is turned by (:func:`rotate_windows`).

    Returns
    -------
    ndarray, shape (B, Qx, Qy), complex
        FFT order, unit norm.
    """
    xp = get_array_module(probe_spectrum)
    qx, qy = probe_spectrum.shape
    host = np.round(np.asarray(fractions if xp is np else fractions.get()), 9)
    uniq, inverse = np.unique(host, axis=0, return_inverse=True)
    probes = shifted_windows(xp.broadcast_to(probe_spectrum, (len(uniq), qx, qy)), xp.asarray(uniq),
                             rotation=rotation)
    return probes[xp.asarray(inverse.reshape(-1))]


def overlap_add(spectra: Any, probe_spectrum: Any, positions: Any, object_shape: tuple[int, int], *,
                periodic: bool, offset: tuple[int, int] = (0, 0), rotation: float = 0.0):
    """Numerator Σ ψ̂·P* and illumination Σ|P|² of the projection for a batch of scan positions.

    Parameters
    ----------
    spectra : ndarray, shape (B, Qx, Qy), complex
        Probe-frame far-field waves √I₀·e^{iφ} of each position, centred.
    probe_spectrum : ndarray, shape (Qx, Qy), complex
        The in-focus probe on the same centred grid (Σ|P̃|² = 1).
    positions : ndarray, shape (B, 2)
        Object-pixel coordinate of each window centre (u = 0), float.
    object_shape : (Nx, Ny)
        Shape of the (partial) object the sums land on.
    periodic : bool
        Wrap indices modulo ``object_shape`` (periodic object) or require them inside.
    offset : (int, int)
        Object pixel of this partial's (0, 0) (for tiles: positions are global, sums are local).
    rotation : float
        Degrees the windows of ``spectra`` and ``probe_spectrum`` are turned by onto the object grid (patterns
        and probe on a detector that is turned against the scan: :func:`rotate_windows`).

    Returns
    -------
    numerator : ndarray, shape (Nx, Ny), complex128
    illumination : ndarray, shape (Nx, Ny), float64
    """
    xp = get_array_module(spectra)
    b, qx, qy = spectra.shape
    positions = xp.asarray(positions, dtype=xp.float64)
    whole = xp.floor(positions)
    frac = positions - whole
    # window index i (FFT order) holds u = i for i < Q − Q//2 and i − Q above: object pixel n + u
    ux = xp.asarray(np.fft.ifftshift(np.arange(qx) - qx // 2))
    uy = xp.asarray(np.fft.ifftshift(np.arange(qy) - qy // 2))
    ix = whole[:, 0:1].astype(xp.int64) + ux[None, :] - int(offset[0])
    iy = whole[:, 1:2].astype(xp.int64) + uy[None, :] - int(offset[1])
    nx, ny = object_shape
    if periodic:
        ix, iy = ix % nx, iy % ny
    elif int(ix.min()) < 0 or int(iy.min()) < 0 or int(ix.max()) >= nx or int(iy.max()) >= ny:
        raise ValueError("a probe window falls outside the object grid; enlarge the object or use periodic=True")
    if xp is np and qx <= nx and qy <= ny:
        if rotation == 0:
            num, den, cls = _centred_products(spectra, probe_spectrum, frac)
        else:
            psi = shifted_windows(spectra, frac, rotation=rotation)
            probe = probe_windows(probe_spectrum, frac, rotation=rotation)
            num = np.fft.fftshift(psi * np.conj(probe), axes=(-2, -1))
            den, cls = np.fft.fftshift(np.abs(probe) ** 2, axes=(-2, -1)), np.arange(b)
        return _window_sums(num, den, cls, ix[:, 0] - ux[0] - qx // 2, iy[:, 0] - uy[0] - qy // 2, (nx, ny))
    psi = shifted_windows(spectra, frac, rotation=rotation)
    probe = probe_windows(probe_spectrum, frac, rotation=rotation)
    num = psi * xp.conj(probe)
    den = xp.abs(probe) ** 2
    flat = (ix[:, :, None] * ny + iy[:, None, :]).reshape(-1)
    n = nx * ny
    re = xp.bincount(flat, weights=num.real.reshape(-1), minlength=n)
    im = xp.bincount(flat, weights=num.imag.reshape(-1), minlength=n)
    ill = xp.bincount(flat, weights=den.reshape(-1), minlength=n)
    return (re + 1j * im).reshape(nx, ny), ill.reshape(nx, ny)


def _centred_products(spectra, probe_spectrum, fractions):
    """The windows' products ψ̂·P* (B, Qx, Qy) and |P|² (U, Qx, Qy) in centred order (u = 0 at Q//2) and each
    position's class in the second (B,), straight from centred spectra, NumPy only.

    The inverse FFT of a centred spectrum multiplied by exp(−2πi·k·(Q//2)/Q) per axis is the centred window
    times a unimodular factor that depends on u only; ψ̂ and P carry the same factor, so it cancels in ψ̂·P* and
    |P|². That replaces the two shifts, the scale and the products of whole windows of :func:`shifted_windows`
    with one multiply before and one after the FFT (the probe's windows are made once per sub-pixel fraction).
    """
    b, qx, qy = spectra.shape
    fractions = np.asarray(fractions, dtype=np.float64)
    # classes as probe_windows makes them (fractions to 1e-9 px); a class's waves are shifted by its first
    # member's exact fraction (scan grids repeat theirs to ~1e-16), its probe by the rounded one, as there
    rounded, first, cls = np.unique(np.round(fractions, 9), axis=0, return_index=True, return_inverse=True)
    cls = cls.reshape(-1)
    dtype = np.complex64 if spectra.dtype == np.complex64 else np.complex128

    def factors(f):  # centred index k holds the frequency (k − Q//2)/Q; the ramp exp(−2πi f·freq) joins in
        gx = np.exp(-2j * np.pi * (np.arange(qx)[None, :] * (qx // 2) + f[:, 0:1] * (np.arange(qx) - qx // 2)) / qx)
        gy = np.exp(-2j * np.pi * (np.arange(qy)[None, :] * (qy // 2) + f[:, 1:2] * (np.arange(qy) - qy // 2)) / qy)
        return (gx[:, :, None] * gy[:, None, :]).astype(dtype)

    factor = factors(fractions[first])
    probes = ifft2(np.asarray(probe_spectrum)[None] * factors(rounded))
    scale = float(qx * qy)  # each window is scaled by √(Qx·Qy) (unit-sum spectrum → unit-norm wave)
    den = (np.abs(probes) ** 2 * scale).astype(np.float64)
    cprobe = (np.conj(probes) * scale).astype(dtype)
    if len(first) == 1:
        num = ifft2(spectra * factor[0])
        num *= cprobe[0]
    else:
        num = ifft2(spectra * factor[cls])
        num *= cprobe[cls]
    return num, den, cls


def _window_sums(num, den, cls, sx, sy, shape):
    """The overlap-add on the CPU as one window add per position (a few µs each) instead of a scatter of every
    window pixel (``bincount``: ~6× slower): centred windows (``num`` per position, ``den[cls[k]]``) are added at
    their first object pixel (``sx``, ``sy``: the object pixel of the window's index 0, in [0, N) for a periodic
    object) on a grid one window wider, whose overhang is then folded back (periodic) — the same sums as the
    scatter."""
    b, qx, qy = num.shape
    nx, ny = shape
    sx, sy = np.asarray(sx) % nx, np.asarray(sy) % ny
    acc = np.zeros((nx + qx, ny + qy), dtype=np.complex128)
    ill = np.zeros((nx + qx, ny + qy), dtype=np.float64)
    for k in range(b):
        x, y = int(sx[k]), int(sy[k])
        acc[x:x + qx, y:y + qy] += num[k]
        ill[x:x + qx, y:y + qy] += den[cls[k]]
    for a in (acc, ill):  # fold the overhang back: rows, then columns (a window is never wider than the grid)
        a[:qx] += a[nx:nx + qx]
        a[:, :qy] += a[:, ny:ny + qy]
    return acc[:nx, :ny].copy(), ill[:nx, :ny].copy()


def divide_illumination(numerator: Any, illumination: Any, *, eps: float = 1e-3):
    """Object O = numerator / (illumination + eps·max illumination).

    Parameters
    ----------
    numerator : ndarray, shape (Nx, Ny), complex
    illumination : ndarray, shape (Nx, Ny), float
    eps : float
        Relative regulariser; pixels no probe reached go to 0.

    Returns
    -------
    ndarray, shape (Nx, Ny), complex128
    """
    return numerator / (illumination + eps * float(illumination.max()))


#: Seconds the unwrapper may take before the run is stopped with a message (it takes < 1 s on 10⁶ pixels).
UNWRAP_SECONDS = 600.0


def run_with_time_budget(fn, *args, seconds: float, what: str, **kwargs):
    """Call ``fn`` in a daemon thread; raise ``TimeoutError`` naming ``what`` if it has not returned in time.

    A stalled library call cannot be killed, but the command still ends with a message instead of hanging.
    """
    import threading

    box: dict = {}

    def target():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True, name=f"budget:{what}")
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError(f"{what} did not finish in {seconds:g} s (a stalled library call); nothing was written: "
                           "report this with the input that caused it")
    if "error" in box:
        raise box["error"]
    return box["value"]


def unwrap(phase: np.ndarray, *, periodic: bool = False, mask: np.ndarray | None = None) -> np.ndarray:
    """Unwrap a 2D phase map where it exceeds ±π (scikit-image's ``unwrap_phase``).

    Parameters
    ----------
    phase : ndarray, shape (Nx, Ny)
        Wrapped phase in rad (host array).
    periodic : bool
        The map wraps around at its edges.
    mask : ndarray of bool, shape (Nx, Ny), optional
        True where the phase is undefined (no illumination).

    Returns
    -------
    ndarray, shape (Nx, Ny), float64
        Unwrapped phase, equal to the input modulo 2π.
    """
    from skimage.restoration import unwrap_phase

    phase = np.asarray(phase, dtype=np.float64)
    bad = ~np.isfinite(phase)
    if bad.any():
        if mask is None or np.any(bad & ~mask):
            raise ValueError(f"the phase to unwrap has {int(bad.sum())} non-finite pixels where it is defined; "
                             "the reconstruction produced NaN: check the data with 'flowtie-dask info --check'")
        phase = np.where(bad, 0.0, phase)
    if float(np.ptp(phase)) < 1.5 * math.pi and not _has_wraps(phase, periodic):
        return phase.copy()
    data = np.ma.masked_array(phase, mask=mask) if mask is not None else phase
    out = run_with_time_budget(unwrap_phase, data, wrap_around=(periodic, periodic), seconds=UNWRAP_SECONDS,
                               what="phase unwrapping (skimage.restoration.unwrap_phase)")
    return np.asarray(np.ma.filled(out, 0.0) if np.ma.isMaskedArray(out) else out, dtype=np.float64)


def _has_wraps(phase, periodic):
    d = [np.diff(phase, axis=a) for a in (0, 1)]
    if periodic:
        d += [phase[:1] - phase[-1:], phase[:, :1] - phase[:, -1:]]
    return any(np.abs(x).max() > math.pi for x in d if x.size)


def dense_projection(far_field: Any, probes: Any):
    """The paper's dense A_pred = F⁻¹ E Pᴴ for a small periodic case.

    Parameters
    ----------
    far_field : ndarray, shape (S, Nx, Ny), complex
        Lab-frame far fields E(q, r̂) of each scan position (FFT order, unnormalised forward FFT of the
        exit wave on the object grid).
    probes : ndarray, shape (S, Nx, Ny), complex
        P(r − r̂) of each scan position on the object grid.

    Returns
    -------
    ndarray, shape (Nx·Ny, Nx·Ny), complex
        A_pred; its diagonal is the overlap-add numerator Σ_r̂ ψ(r; r̂)·P*(r − r̂).
    """
    xp = get_array_module(far_field)
    s = far_field.shape[0]
    e = ifft2(far_field).reshape(s, -1).T  # F⁻¹ E: columns are exit waves ψ(·; r̂)
    p = probes.reshape(s, -1).T
    return e @ xp.conj(p).T



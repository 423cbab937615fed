"""Least-squares integration of a gradient field over two scan axes, on NumPy, CuPy and torch (DESIGN §3).

One operator, :func:`integrate_gradient`, serves the reconstruction kernels (``tie``, iCoM, FlowTIE
inference: NumPy/CuPy arrays with the scan axes first) and the training losses (torch tensors with the
scan axes last, gradients flowing through). It dispatches on the type of its input to a small namespace
adapter (:class:`_ArrayOps` for NumPy/CuPy, :class:`_TorchOps` for torch) and writes the maths once:

* the Fourier symbols — forward differences, w_j = e^{2πiK_j·s_j} − 1, whose least-squares inverse is
  φ̃ = Σ_j s_j·conj(w_j)·g̃_j / Σ_j |w_j|²; or the spectral derivative 2πiK_j (Frankot–Chellappa),
  φ̃ = −i(K·g̃)/(2π(|K|² + k_hp²));
* the mirror (even) extension of the gradient field for non-periodic scans (φ even ⇒ ∂_xφ odd in x and
  even in y), integrated periodically on 2Rx × 2Ry and cropped back.

Precision: NumPy/CuPy compute in float32 when both components are float32 and in float64 otherwise; the
symbols stay float64 (the products promote), so results are those of the kernels before this module.
Torch computes in float64 when a component is float64 and in float32 otherwise (float16/bfloat16 too);
the symbols are cast to the working precision, as the training loss always did (complex128 arithmetic
is slow on most GPUs).

This module imports neither torch nor CuPy: torch is recognised only when it has already been imported
(a tensor cannot exist otherwise), CuPy through :func:`flowtie_dask.backend.get_array_module`.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from .backend import get_array_module, get_fft_module

__all__ = ["integrate_gradient", "mirror_gradient", "zero_mean_gradient", "is_torch_tensor", "KINDS", "BOUNDARIES"]

KINDS = ("forward", "spectral")
BOUNDARIES = ("periodic", "mirror")


def is_torch_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


class _ArrayOps:
    """NumPy or CuPy: the array module for elementwise maths, the backend's FFT module for transforms."""

    def __init__(self, x):
        self.xp = get_array_module(x)
        self.fft = get_fft_module(self.xp)

    def real_dtype(self, gx, gy):
        xp = self.xp
        return xp.float32 if (gx.dtype == xp.float32 and gy.dtype == xp.float32) else xp.float64

    def astype(self, x, dtype):
        return x.astype(dtype, copy=False)

    def fftfreq(self, n, d):
        return self.xp.fft.fftfreq(n, d=d)

    def rfftfreq(self, n, d):
        return self.xp.fft.rfftfreq(n, d=d)

    def rfft2(self, x, axes):
        return self.fft.rfft2(x, axes=axes)

    def irfft2(self, x, s, axes):
        return self.fft.irfft2(x, s=s, axes=axes)

    def exp(self, x):
        return self.xp.exp(x)

    def conj(self, x):
        return self.xp.conj(x)

    def abs(self, x):
        return self.xp.abs(x)

    def where(self, cond, a, b):
        return self.xp.where(cond, a, b)

    def zeros_like(self, x):
        return self.xp.zeros_like(x)

    def concat(self, parts, axis):
        return self.xp.concatenate(parts, axis=axis)

    def flip(self, x, axis):
        return self.xp.flip(x, axis=axis)

    def mean(self, x, axes):
        return x.mean(axis=axes, keepdims=True)

    def working(self, symbol, like):
        """A float64 symbol as it enters the products: unchanged (the products promote to complex128)."""
        return symbol

    def scalar(self, s):
        """A scan step as the maths takes it: unchanged (NumPy scalars keep their own promotion)."""
        return s

    def zero_dc(self, x, index):
        """Zero the K = 0 term in place (on a fresh quotient; nothing saved for backward refers to it)."""
        x[index] = 0.0
        return x


class _TorchOps(_ArrayOps):
    """torch: ``torch`` for elementwise maths, ``torch.fft`` for transforms; autograd-friendly."""

    def __init__(self, x):
        import torch

        self.torch = self.xp = torch  # exp, conj, abs, where and zeros_like are inherited: torch's have NumPy's call
        self.device = x.device

    def real_dtype(self, gx, gy):
        t = self.torch
        return t.float64 if t.float64 in (gx.dtype, gy.dtype) else t.float32

    def astype(self, x, dtype):
        return x.to(dtype)

    def fftfreq(self, n, d):
        return self.torch.fft.fftfreq(n, d=float(d), dtype=self.torch.float64, device=self.device)

    def rfftfreq(self, n, d):
        return self.torch.fft.rfftfreq(n, d=float(d), dtype=self.torch.float64, device=self.device)

    def rfft2(self, x, axes):
        return self.torch.fft.rfft2(x, dim=axes)

    def irfft2(self, x, s, axes):
        return self.torch.fft.irfft2(x, s=s, dim=axes)

    def concat(self, parts, axis):
        return self.torch.cat(parts, dim=axis)

    def flip(self, x, axis):
        return self.torch.flip(x, dims=(axis,))

    def mean(self, x, axes):
        return x.mean(dim=axes, keepdim=True)

    def scalar(self, s):
        return float(s)

    def working(self, symbol, like):
        """A float64 symbol cast to the precision of the spectrum ``like`` (complex or real)."""
        t = self.torch
        if symbol.is_complex():
            return symbol.to(like.dtype)
        return symbol.to(t.float32 if like.dtype == t.complex64 else t.float64)


def _ops(x):
    return _TorchOps(x) if is_torch_tensor(x) else _ArrayOps(x)


def _at(ndim: int, axis: int, index) -> tuple:
    """An index tuple selecting ``index`` (a slice or an int) along ``axis`` and everything elsewhere."""
    return (slice(None),) * axis + (index,) + (slice(None),) * (ndim - axis - 1)


def _axes(ndim: int, axes) -> tuple[int, int]:
    a = tuple(int(ax) % ndim for ax in axes)
    if len(a) != 2 or a[0] == a[1]:
        raise ValueError(f"axes must name two different scan axes, got {axes!r}")
    return a


def mirror_gradient(gx: Any, gy: Any, kind: str = "forward", *, axes: tuple[int, int] = (0, 1)):
    """Gradient field of the mirror (even) extension of the phase, over twice the scan.

    φ even ⇒ ∂_xφ is odd in x and even in y (and ∂_yφ the converse). For ``kind="forward"`` the
    differences of φ_ext[2R−1−i] = φ[i] along x are g[0..R−2], 0, −g[R−2..0], 0: the wrap-around
    difference g[R−1] is dropped. For ``kind="spectral"`` the odd extension is g, −flip(g).

    Parameters
    ----------
    gx, gy : array or Tensor, scan axes ``axes`` of lengths (Rx, Ry)
    kind : {"forward", "spectral"}
    axes : (int, int)
        The scan axes (x, y).

    Returns
    -------
    gx_ext, gy_ext : same type, scan axes of lengths (2Rx, 2Ry)
    crop : (Rx, Ry)
    """
    ops = _ops(gx)
    ax, ay = _axes(gx.ndim, axes)
    crop = (gx.shape[ax], gx.shape[ay])

    def odd(g, axis):
        if kind == "forward":
            head = g[_at(g.ndim, axis, slice(0, g.shape[axis] - 1))]
            zero = ops.zeros_like(g[_at(g.ndim, axis, slice(0, 1))])
            return ops.concat([head, zero, -ops.flip(head, axis), zero], axis)
        return ops.concat([g, -ops.flip(g, axis)], axis)

    def even(g, axis):
        return ops.concat([g, ops.flip(g, axis)], axis)

    return even(odd(gx, ax), ay), odd(even(gy, ax), ay), crop


def zero_mean_gradient(gx: Any, gy: Any, *, boundary: str, axes: tuple[int, int] = (0, 1)):
    """The gradient field less its mean over the scan axes, before a non-periodic integration.

    A periodic integration ignores the field's mean (a periodic phase has no net slope); a ``"mirror"`` one turns it
    into a ramp across the scan. For the probe-frame phase of one detector pixel the true mean gradient over a scan
    is its change from edge to edge over the scan's width — bounded, so small against a learned field's systematic
    offset, which would otherwise become a ramp of offset × width. So the mean is removed per detector pixel (every
    other axis), as the periodic integration does; with ``boundary="periodic"`` the field is returned as it is.

    Parameters
    ----------
    gx, gy : ndarray or Tensor, shape (..., Rx, ..., Ry, ...)
        Gradient components (rad/Å) with the scan along ``axes``.
    boundary : {"periodic", "mirror"}
    axes : (int, int)

    Returns
    -------
    gx, gy : same types and shapes
    """
    if boundary == "periodic":
        return gx, gy
    ax = _axes(gx.ndim, axes)
    if is_torch_tensor(gx):
        return gx - gx.mean(dim=ax, keepdim=True), gy - gy.mean(dim=ax, keepdim=True)
    return gx - gx.mean(axis=ax, keepdims=True), gy - gy.mean(axis=ax, keepdims=True)


def _check(kind: str, boundary: str):
    if kind not in KINDS:
        raise ValueError(f"kind must be 'forward' or 'spectral', got {kind!r}")
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be 'periodic' or 'mirror', got {boundary!r}")


def integrate_gradient(gx: Any, gy: Any, *, step: tuple[float, float], kind: str = "forward",
                       boundary: str = "periodic", highpass: float = 0.0, axes: tuple[int, int] = (0, 1)):
    """Least-squares phase from a gradient field over two scan axes, zero mean (DESIGN §3).

    Parameters
    ----------
    gx, gy : ndarray (NumPy or CuPy) or torch.Tensor, same shape
        Gradient field in rad/Å along the scan axes ``axes``; any other axes are batch axes.
    step : (sx, sy)
        Scan step in Å (numbers; a per-sample step is applied by the caller, see
        :func:`flowtie_dask.model.fields.integrate_forward`).
    kind : {"forward", "spectral"}
        "forward": the field is forward differences; inverse of the operator with Fourier symbol
        w_j = e^{2πiK_j·step} − 1 (exact for :func:`flowtie_dask.tie.forward_differences`).
        "spectral": Frankot–Chellappa, φ̃ = −i(K·g̃)/(2π|K|²).
    boundary : {"periodic", "mirror"}
        "mirror" integrates the even extension (no wrap-around artefacts on non-periodic tiles) and
        removes the mean of the crop.
    highpass : float
        "spectral" only: regulariser k_hp in 1/Å, φ̃ = −i(K·g̃)/(2π(|K|² + k_hp²)) (py4DSTEM's DPC and
        LiberTEM's iCoM damp the lowest frequencies the same way); 0 = none.
    axes : (int, int)
        The scan axes (x, y): (0, 1) for the package's (Rx, Ry, ...) arrays, (-2, -1) for the training
        tensors (B, P, Rx, Ry).

    Returns
    -------
    ndarray or Tensor, the shape of ``gx``
        rad. NumPy/CuPy: float32 for float32 input, float64 otherwise; torch: float64 when a component
        is float64, float32 otherwise. Torch gradients flow back to ``gx`` and ``gy``.
    """
    _check(kind, boundary)
    ops = _ops(gx)
    ax, ay = _axes(gx.ndim, axes)
    sx, sy = ops.scalar(step[0]), ops.scalar(step[1])
    crop = None
    if boundary == "mirror":
        gx, gy, crop = mirror_gradient(gx, gy, kind, axes=(ax, ay))
    ndim = gx.ndim
    mx, my = gx.shape[ax], gx.shape[ay]
    real = ops.real_dtype(gx, gy)
    shape_x, shape_y = [1] * ndim, [1] * ndim
    shape_x[ax], shape_y[ay] = mx, my // 2 + 1
    kx = ops.fftfreq(mx, sx).reshape(tuple(shape_x))
    ky = ops.rfftfreq(my, sy).reshape(tuple(shape_y))
    gxh = ops.rfft2(ops.astype(gx, real), (ax, ay))
    gyh = ops.rfft2(ops.astype(gy, real), (ax, ay))
    if kind == "forward":
        wx = ops.exp(2j * math.pi * kx * sx) - 1
        wy = ops.exp(2j * math.pi * ky * sy) - 1
        sym_x, sym_y = sx * ops.conj(wx), sy * ops.conj(wy)
        den = ops.abs(wx) ** 2 + ops.abs(wy) ** 2
    else:
        sym_x, sym_y = -1j * kx, -1j * ky
        den = 2 * math.pi * (kx**2 + ky**2 + highpass**2)
    den = ops.where(den == 0, 1.0, den)
    num = ops.working(sym_x, gxh) * gxh + ops.working(sym_y, gyh) * gyh
    phi_hat = ops.astype(num / ops.working(den, gxh), gxh.dtype)
    dc = [slice(None)] * ndim
    dc[ax] = dc[ay] = 0
    phi_hat = ops.zero_dc(phi_hat, tuple(dc))
    phi = ops.irfft2(phi_hat, (mx, my), (ax, ay))
    if crop is not None:
        phi = phi[_at(ndim, ax, slice(0, crop[0]))][_at(ndim, ay, slice(0, crop[1]))]
        phi = phi - ops.mean(phi, (ax, ay))
    return phi

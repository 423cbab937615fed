"""The fast form of FlowTIE inference: the network on the bright-field pixels one by one and on b×b super-pixels
of the dark field (:class:`~flowtie_dask.model.inference.FlowTIEPhase` with ``dark_field_bin=b``).

A :class:`~flowtie_dask.model.architectures.SharedFlowModel` costs the same per detector pixel, and most pixels are
dark. :func:`pixel_groups` keeps every pixel with |q| ≤ (1 + margin)·α/λ as its own group and puts the others of
each b×b block of the detector grid together; :func:`group_means` averages a scan over each group's members,
:func:`grouped_network` runs the model on the groups (a group weighing in the detector-mixing context as all its
members do) and :func:`spread` gives every member its group's field (or, integrated first, its phase). Torch is imported by the functions that need it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..backend import from_torch

__all__ = ["DEFAULT_DARK_FIELD_BIN", "DEFAULT_MARGIN", "PixelGroups", "pixel_groups", "group_means",
           "grouped_network", "group_field", "spread"]

#: Default super-pixel side (detector pixels) of the dark field: 4 (1 = the full form). Measured
#: (``benchmarks/flowtie_speed.py``, paper-64, Table 1's four settings): b = 4 gives an MSE at or below the full
#: form's in all four (−2.4, −2.2, −0.1, −2.5 % with margin 0) at ~1/10 of its time; b = 8 is ~20 % faster and up to
#: 2 % worse; b = 2 gains nothing.
DEFAULT_DARK_FIELD_BIN = 4
#: Pixels with |q| ≤ (1 + margin)·α/λ are evaluated one by one in the fast form. 0.25: on the experiment-like Si
#: series (another simulator, 2×2 camera binning) margin 0 cost the general model 24 % (clean twin 0.00197 against
#: the full form's 0.00159), margin 0.25 0.6 % (0.001595; calibrated 0.00205 against 0.00200; GaAs 5.7 Å 0.00138
#: against 0.00136), for ~30 % more time than margin 0.
DEFAULT_MARGIN = 0.25


class PixelGroups(NamedTuple):
    """Detector pixels grouped for the fast form (:func:`pixel_groups`); G groups of P = Qx·Qy pixels.

    Attributes
    ----------
    labels : ndarray, shape (P,), int64
        Group of each pixel (flattened C order); the bright-field pixels' groups come first.
    count : ndarray, shape (G,), int64
        Members of each group.
    q : ndarray, shape (G, 2)
        Mean scattering vector of the members, 1/Å.
    size : ndarray, shape (G, 2)
        Extent of the members' bounding box along each detector axis (pixels × sampling), 1/Å.
    n_bright : int
        Groups that are single pixels within (1 + margin)·α/λ (groups 0 … n_bright − 1).
    """

    labels: np.ndarray
    count: np.ndarray
    q: np.ndarray
    size: np.ndarray
    n_bright: int


def pixel_groups(geometry, dark_field_bin: int, margin: float = DEFAULT_MARGIN) -> PixelGroups:
    """Group the detector pixels: one group per pixel with |q| ≤ (1 + margin)·α/λ, and the other pixels of each
    ``dark_field_bin``² block of the detector grid together.

    Blocks are bounded at c + (j + ½)·b along each axis (c the detector centre, pixel units), so the
    partition is symmetric under q → −q unless a block edge falls on a pixel centre (c integer, b even).

    Parameters
    ----------
    geometry : ReconstructionGeometry
        Its ``q_labels``, ``detector_shape``, ``detector_center``, ``detector_sampling`` (1/Å), ``semiangle`` (mrad) and
        ``wavelength`` (Å).
    dark_field_bin : int
        b ≥ 1 (1: every pixel its own group).
    margin : float
        ≥ 0, fraction of the aperture radius α/λ beyond it still evaluated per pixel.

    Returns
    -------
    PixelGroups
    """
    if isinstance(dark_field_bin, bool) or int(dark_field_bin) != dark_field_bin or dark_field_bin < 1:
        raise ValueError(f"dark_field_bin must be an integer ≥ 1 (1: the full form), got {dark_field_bin!r}")
    if not margin >= 0:
        raise ValueError(f"margin must be ≥ 0 (fraction of the aperture radius), got {margin!r}")
    b = int(dark_field_bin)
    nx, ny = geometry.detector_shape
    p = nx * ny
    qq = np.asarray(geometry.q_labels(np), dtype=float)  # (P, 2) in the scan frame (a detector turned by windows)
    aperture = float(geometry.semiangle) * 1e-3 / float(geometry.wavelength)
    near = (np.hypot(qq[:, 0], qq[:, 1]) <= (1.0 + margin) * aperture) | (b == 1)
    blocks = [np.floor((np.arange(n) - c) / b + 0.5).astype(np.int64) for n, c in zip((nx, ny), geometry.detector_center)]
    bx, by = (a.ravel() for a in np.meshgrid(blocks[0] - blocks[0].min(), blocks[1] - blocks[1].min(), indexing="ij"))
    key = np.where(near, np.arange(p), p + bx * (int(by.max()) + 1) + by)
    _, labels = np.unique(key, return_inverse=True)  # sorted keys: the bright pixels' groups first
    labels = labels.astype(np.int64).ravel()
    g = int(labels.max()) + 1
    count = np.bincount(labels, minlength=g)
    q = np.stack([np.bincount(labels, qq[:, c], minlength=g) for c in (0, 1)], -1) / count[:, None]
    size = np.empty((g, 2))
    for c, (idx, d) in enumerate(zip(np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij"),
                                     geometry.detector_sampling)):
        lo, hi = np.full(g, p), np.full(g, -1)
        np.minimum.at(lo, labels, idx.ravel())
        np.maximum.at(hi, labels, idx.ravel())
        size[:, c] = (hi - lo + 1) * float(d)
    return PixelGroups(labels, count, q, size, int(near.sum()))


def group_means(scan, labels, count):
    """Mean of a scan over each group's members.

    Parameters
    ----------
    scan : Tensor, shape (S, P)
        S scan positions (flattened), P detector pixels.
    labels : Tensor, shape (P,), int64
    count : Tensor, shape (G,)

    Returns
    -------
    Tensor, shape (S, G)
        Same dtype and device as ``scan``.
    """
    out = scan.new_zeros(scan.shape[0], count.shape[0]).index_add_(1, labels, scan)
    return out.div_(count.to(out.dtype))


def group_field(u, step, xp):
    """The groups' field in the array layout: (1, 2, G, hx, hy) rad per scan step → (2, hx, hy, G) rad/Å.

    Parameters
    ----------
    u : Tensor, shape (1, 2, G, hx, hy)
    step : (float, float)
        Scan steps, Å.
    xp : module
        NumPy or CuPy, the array module of the result (it shares the tensor's memory).

    Returns
    -------
    ndarray, shape (2, hx, hy, G), float32
    """
    small = u[0].permute(0, 2, 3, 1).contiguous()
    for c in (0, 1):
        small[c] /= step[c]
    return from_torch(small)


def spread(a, labels, xp):
    """Every pixel's value from its group's: (..., G) → (..., P), ``out[..., p] = a[..., labels[p]]``.

    Parameters
    ----------
    a : ndarray, shape (..., G)
    labels : ndarray, shape (P,), int64 (of the array module ``xp``)
    xp : module
        NumPy or CuPy.

    Returns
    -------
    ndarray, shape (..., P)
    """
    lead = a.shape[:-1]
    return xp.take(a.reshape(-1, a.shape[-1]), labels, axis=1).reshape(*lead, labels.shape[0])


def _folded_stem(model, x, pixel=None):
    """The stem's input channels that vary over the scan, and a per-group bias from the others.

    A channel that is constant over the scan for every group (the q and optics maps) stays constant under
    reflect, replicate or circular padding, so its share of the stem is the channel's value times the sum of
    its kernel. With ``pixel`` (the constant channels (B, Cc, G) apart from ``x``'s (B, Cs, G, Rx, Ry), which all
    count as varying: ``model.input_parts``) they are known; otherwise they are found in ``x``. Returns (indices
    of the varying channels in ``x``, their weights (H, Cv, k, k), bias (B, G, H)), or None (zero padding, or no
    constant channel) to run the stem as it is.
    """
    import torch

    stem = model.stem
    if stem.padding_mode == "zeros":
        return None
    if pixel is not None:
        cs = x.shape[1]
        bias = stem.bias + torch.einsum("bcg,hc->bgh", pixel, stem.weight[:, cs:].sum(dim=(-2, -1)))
        return list(range(cs)), stem.weight[:, :cs].contiguous(), bias
    const = [c for c in range(x.shape[1]) if bool((x[:, c] == x[:, c, :, :1, :1]).all())]
    if not const:
        return None
    var = [c for c in range(x.shape[1]) if c not in const] or [const.pop(0)]  # a scan without contrast: keep one
    bias = stem.bias + torch.einsum("bcg,hc->bgh", x[:, const, :, 0, 0], stem.weight[:, const].sum(dim=(-2, -1)))
    return var, stem.weight[:, var].contiguous(), bias


def _narrow_conv(conv, x, weight):
    """A k×k convolution with few output channels (the head) as one 1×1 convolution to k²·C_out channels and k²
    shifted sums: the same result, several times faster on a CPU than a direct convolution with 2 outputs.

    Parameters
    ----------
    conv : nn.Conv2d
        Stride 1, no dilation, one group, 'same' padding (``padding_mode`` any).
    x : Tensor, shape (N, C_in, Rx, Ry)
    weight : Tensor, shape (k²·C_out, C_in, 1, 1)
        ``conv.weight`` as (dy, dx, c_out) × c_in (:func:`_narrow_weight`).

    Returns
    -------
    Tensor, shape (N, C_out, Rx, Ry)
    """
    import torch.nn.functional as F

    k, co = conv.kernel_size[0], conv.out_channels
    n, _, rx, ry = x.shape
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    z = F.conv2d(F.pad(x, conv._reversed_padding_repeated_twice, mode=mode), weight)
    z = z.view(n, k, k, co, rx + k - 1, ry + k - 1)
    out = z[:, 0, 0, :, :rx, :ry] + conv.bias.view(1, co, 1, 1)
    for dy in range(k):
        for dx in range(k):
            if dy or dx:
                out += z[:, dy, dx, :, dy:dy + rx, dx:dx + ry]
    return out


def _narrow_weight(conv):
    """``conv.weight`` (C_out, C_in, k, k) as (k²·C_out, C_in, 1, 1), rows in (dy, dx, c_out) order."""
    co, ci, k, _ = conv.weight.shape
    return conv.weight.permute(2, 3, 0, 1).reshape(k * k * co, ci, 1, 1).contiguous()


def _map(fn, items, workers: int):
    """``[fn(i) for i in items]``, on ``workers`` threads that each run torch on one thread of its own.

    Small passes parallelise badly inside an operator (its threads meet at a barrier after every one, and
    a thread the OS has descheduled stalls the other); passes spread over threads do not wait for each
    other. Torch's own thread count is set to 1 while the threads start (they take it then) and restored.
    """
    import torch

    if workers <= 1 or len(items) <= 1:
        return [fn(i) for i in items]
    from concurrent.futures import ThreadPoolExecutor

    grad = torch.is_grad_enabled()

    def run(i):
        with torch.set_grad_enabled(grad):
            return fn(i)

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(run, items))  # in order: the sums below do not depend on the timing
    finally:
        torch.set_num_threads(before)


def grouped_network(model, x, weights, pixel_chunk: int, workers: int = 1):
    """:meth:`SharedFlowModel.forward` after its input features, with given detector-mixing weights.

    Parameters
    ----------
    model : SharedFlowModel
    x : Tensor, shape (B, C, G, Rx, Ry), or (Tensor (B, Cs, G, Rx, Ry), Tensor (B, Cc, G))
        ``model.input_features`` of the groups, or ``model.input_parts`` (the channels constant over the scan
        apart, not expanded: a pass expands only its own groups', when the stem cannot fold them).
    weights : Tensor, shape (B, G, Rx, Ry)
        Each group's weight in the mixing context (its mean I₀ times its member count: the sum of its
        members' I₀, as in the full form).
    pixel_chunk : int
        Groups per pass.
    workers : int
        Threads the passes are spread over (CPU; each runs torch on one thread); 1: torch's own threads.

    Returns
    -------
    Tensor, shape (B, 2, G, Rx, Ry)
        rad per scan step; the same for any ``workers``.
    """
    import torch
    import torch.nn.functional as F

    from .architectures import join_features

    x, pixel = x if isinstance(x, tuple) else (x, None)
    b, _, p, rx, ry = x.shape
    h = model.hidden
    slices = [slice(s, min(s + pixel_chunk, p)) for s in range(0, p, pixel_chunk)]
    folded = _folded_stem(model, x, pixel)
    head = _narrow_weight(model.head)

    def stem(sl):  # (B·n, H, Rx, Ry)
        if folded is None:
            return model._stem(x[:, :, sl] if pixel is None else join_features(x[:, :, sl], pixel[:, :, sl]))
        var, w, bias = folded
        xs = x[:, var, sl].transpose(1, 2).reshape(-1, len(var), rx, ry)
        xs = F.pad(xs, model.stem._reversed_padding_repeated_twice, mode=model.stem.padding_mode)
        out = F.conv2d(xs, w)
        out += bias[:, sl].reshape(-1, h, 1, 1)
        return model.act(out)

    ctx = None
    if model.mixing:
        def part(sl):  # (B, H, Rx, Ry)
            return (stem(sl).view(b, -1, h, rx, ry) * weights[:, sl, None]).sum(dim=1)

        if workers <= 1:  # summed as they come, in the same order: a list of every part, each allocated after its
            num = part(slices[0])  # pass's activations, would keep the heap from reusing them (1 GB on a 96² tile)
            for sl in slices[1:]:
                num += part(sl)
        else:
            parts = _map(part, slices, workers)
            num = parts[0]
            for other in parts[1:]:
                num += other
        den = weights.sum(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        ctx = model.mix_context(num / den)
    out = x.new_empty(b, 2, p, rx, ry)

    def rest(sl):
        hs = stem(sl)
        n = sl.stop - sl.start
        if model.mixing:
            hs = model.mix_self(hs).view(b, n, h, rx, ry)
            hs += ctx[:, None]
            hs = model.act(hs.view(b * n, h, rx, ry))
        for conv in model.body:
            hs = model.act(conv(hs))
        out[:, :, sl] = _narrow_conv(model.head, hs, head).view(b, n, 2, rx, ry).transpose(1, 2)

    _map(rest, slices, workers)
    return out

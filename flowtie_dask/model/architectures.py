"""FlowTIE networks: the paper's FlowPredictorModel and a detector-size-agnostic SharedFlowModel.

Both map a defocus series, given per sample with the scan axes last,

    didz : (B, P, Rx, Ry)  ∂I/∂C10 in 1/Å of unit-sum patterns (P = Qx·Qy detector pixels, flattened)
    i0   : (B, P, Rx, Ry)  in-focus intensity
    q    : (P, 2) or (B, P, 2)  true scattering vector of each detector pixel, 1/Å (scan-aligned)

to the field ``u`` of shape (B, 2, P, Rx, Ry): the forward differences of the probe-frame phase over
one scan step, in rad per step (dimensionless), 2π jumps included —
u[:, 0] ≈ φ(r̂ + ŝx) − φ(r̂), u[:, 1] ≈ φ(r̂ + ŝy) − φ(r̂) (DESIGN §3; ``tie.forward_differences·step``).
Inputs arrive raw; each model normalises them itself (see the class docstrings).

Convolutions run over the scan axes only, with 'same' padding in **reflect** mode by default (the
even extension a tile would get from :func:`flowtie_dask.tie.mirror_extend`, minus its q → −q flip;
``padding_mode`` can be "replicate", "circular" or "zeros" instead). ``receptive_field`` is the number
of scan positions of context on each side of an output position: a tile needs at least that halo for
the network (the integrator, which is global, needs its own).

``model.config()`` is a JSON-able dict ``{"name": class name, **constructor kwargs}`` and
:func:`flowtie_dask.model.registry.build_model` rebuilds the network from it, so a checkpoint holding that dict (as JSON) and the
``state_dict`` is read back with ``torch.load(..., weights_only=True)`` — no pickled code
(:mod:`flowtie_dask.model.checkpoint`).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FlowPredictorModel", "SharedFlowModel", "DZ_REF", "Q_SCALE", "join_features"]

#: Reference defocus (Å) that turns ∂I/∂C10 into a dimensionless relative intensity change.
DZ_REF = 20.0
#: Scale (Å) applied to q (1/Å) in the SharedFlowModel's q features (300 kV, 20 mrad: α/λ ≈ 1 1/Å).
Q_SCALE = 0.5
#: Ī(q) is clipped below at IBAR_EPS·max_q Ī(q) before it divides the inputs.
IBAR_EPS = 1e-3
#: Floor of the brightness feature: log10(Ī(q)/max Ī) is clipped at −BRIGHTNESS_DECADES and divided by it.
BRIGHTNESS_DECADES = 6.0

_PADDING_MODES = ("reflect", "replicate", "circular", "zeros")


def _check_inputs(didz: torch.Tensor, i0: torch.Tensor | None):
    if didz.ndim != 4:
        raise ValueError(f"didz must be (B, P, Rx, Ry), got shape {tuple(didz.shape)}")
    if i0 is not None and i0.shape != didz.shape:
        raise ValueError(f"i0 {tuple(i0.shape)} and didz {tuple(didz.shape)} must have the same shape")


def _conv(cin: int, cout: int, k: int, padding_mode: str) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, padding_mode=padding_mode)


def _check_kernel_size(kernel_size: int) -> None:
    """Refuse an even kernel size (the 'same' padding k//2 keeps the scan shape only for odd k)."""
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")


def _check_padding_mode(padding_mode: str) -> None:
    """Refuse a padding mode that is not one of :data:`_PADDING_MODES` (those nn.Conv2d takes)."""
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")


def mean_pattern(i0: torch.Tensor, ibar: torch.Tensor | None = None, eps: float = IBAR_EPS) -> torch.Tensor:
    """Per-sample scan mean Ī(q) of the in-focus intensity, clipped below at ``eps``·max_q Ī.

    Parameters
    ----------
    i0 : Tensor, shape (B, P, Rx, Ry)
    ibar : Tensor, shape (P,) or (B, P), optional
        Use this mean pattern instead of the scan mean of ``i0`` (e.g. the whole scan's, so that a tile
        is normalised like the whole scan).
    eps : float

    Returns
    -------
    Tensor, shape (B, P, 1, 1)
    """
    if ibar is None:
        ibar = i0.mean(dim=(-2, -1))
    else:
        ibar = torch.as_tensor(ibar, dtype=i0.dtype, device=i0.device).expand(i0.shape[0], i0.shape[1])
    floor = eps * ibar.amax(dim=1, keepdim=True).clamp_min(torch.finfo(i0.dtype).tiny)
    return torch.maximum(ibar, floor)[..., None, None]


def join_features(scan: torch.Tensor, pixel: torch.Tensor) -> torch.Tensor:
    """Input channels from their parts: (B, Cs, P, Rx, Ry) varying over the scan and (B, Cc, P) constant over it
    → (B, Cs + Cc, P, Rx, Ry), the constant ones expanded over the scan."""
    b, _, p, rx, ry = scan.shape
    return torch.cat([scan, pixel[..., None, None].expand(b, pixel.shape[1], p, rx, ry)], dim=1)


class FlowPredictorModel(nn.Module):
    """The paper's FlowPredictorModel (FlowTIE §3): a 4-layer convolutional encoder–decoder.

    ConvEncoder: Conv2d(P→D, k) + BatchNorm2d + GELU, Conv2d(D→D, k) + BatchNorm2d + GELU;
    decoder: Conv2d(D→D, k) + GELU, Conv2d(D→2P, k). The P detector pixels are the input channels, so a
    trained model is tied to its detector size (and sampling).

    Normalisation (inside :meth:`forward`): the network sees ``didz`` only, as in the paper, scaled per
    sample to a dimensionless relative intensity change,

        x = didz · DZ_REF / ⟨i0⟩   with ⟨i0⟩ the mean of i0 over scan and detector (DZ_REF = 20 Å)

    when ``i0`` is given (for unit-sum patterns ⟨i0⟩ = 1/P), else x = didz / std(didz) (per sample).
    Use one form consistently between training and inference: the two scales differ.

    Parameters
    ----------
    n_pixels : int
        P = Qx·Qy.
    hidden : int
        D (128 in the paper).
    kernel_size : int
        Odd kernel size k of all four convolutions.
    padding_mode : {"reflect", "replicate", "circular", "zeros"}
        'same' padding over the scan axes.

    Attributes
    ----------
    receptive_field : int
        4·(k//2) scan positions on each side.

    Notes
    -----
    Trainable parameters (BatchNorm running statistics are buffers, not counted):
    3·P·D·k² + 2·D²·k² + 7·D + 2·P (:meth:`count_parameters`).
    """

    def __init__(self, n_pixels: int, hidden: int = 128, kernel_size: int = 3, padding_mode: str = "reflect"):
        super().__init__()
        _check_kernel_size(kernel_size)
        _check_padding_mode(padding_mode)
        self.n_pixels = int(n_pixels)
        self.hidden = int(hidden)
        self.kernel_size = int(kernel_size)
        self.padding_mode = padding_mode
        p, d, k = self.n_pixels, self.hidden, self.kernel_size
        self.encoder = nn.Sequential(
            _conv(p, d, k, padding_mode), nn.BatchNorm2d(d), nn.GELU(),
            _conv(d, d, k, padding_mode), nn.BatchNorm2d(d), nn.GELU(),
        )
        self.decoder = nn.Sequential(
            _conv(d, d, k, padding_mode), nn.GELU(),
            _conv(d, 2 * p, k, padding_mode),
        )
        self.receptive_field = 4 * (k // 2)

    @staticmethod
    def count_parameters(n_pixels: int, hidden: int = 128, kernel_size: int = 3) -> int:
        """3·P·D·k² + 2·D²·k² + 7·D + 2·P trainable parameters."""
        p, d, k2 = n_pixels, hidden, kernel_size**2
        return 3 * p * d * k2 + 2 * d * d * k2 + 7 * d + 2 * p

    def parameter_count_formula(self) -> int:
        """:meth:`count_parameters` for this model's sizes."""
        return self.count_parameters(self.n_pixels, self.hidden, self.kernel_size)

    def config(self) -> dict:
        """JSON-able constructor description, for :func:`~flowtie_dask.model.registry.build_model`."""
        return {"name": type(self).__name__, "n_pixels": self.n_pixels, "hidden": self.hidden,
                "kernel_size": self.kernel_size, "padding_mode": self.padding_mode}

    def normalise(self, didz: torch.Tensor, i0: torch.Tensor | None = None) -> torch.Tensor:
        """The network input x (see the class docstring), shape (B, P, Rx, Ry)."""
        _check_inputs(didz, i0)
        if i0 is not None:
            scale = i0.mean(dim=(1, 2, 3), keepdim=True).clamp_min(torch.finfo(didz.dtype).tiny)
            return didz * (DZ_REF / scale)
        return didz / didz.std(dim=(1, 2, 3), keepdim=True).clamp_min(torch.finfo(didz.dtype).tiny)

    def forward(self, didz: torch.Tensor, i0: torch.Tensor | None = None, q: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Predict u.

        Parameters
        ----------
        didz : Tensor, shape (B, P, Rx, Ry)
            ∂I/∂C10, 1/Å.
        i0 : Tensor, shape (B, P, Rx, Ry), optional
            Only its mean sets the input scale.
        q : ignored
            Accepted for a common signature with :class:`SharedFlowModel`.

        Returns
        -------
        Tensor, shape (B, 2, P, Rx, Ry)
            rad per scan step.
        """
        if didz.shape[1] != self.n_pixels:
            raise ValueError(f"model built for P = {self.n_pixels} detector pixels, got {didz.shape[1]}")
        x = self.normalise(didz, i0)
        y = self.decoder(self.encoder(x))
        b, _, rx, ry = y.shape
        return y.view(b, 2, self.n_pixels, rx, ry)


class SharedFlowModel(nn.Module):
    """Detector-size-agnostic FlowTIE network: one small scan-space CNN shared by all detector pixels.

    Every detector pixel q is an image over the scan; the P pixels are folded into the batch and the
    same 2D CNN runs on each, so the model works for any P, detector sampling and scan size, and its
    parameter count does not depend on P. Input channels per pixel (all dimensionless):

    0. didz·DZ_REF/Ī(q)        relative intensity change over DZ_REF = 20 Å of defocus;
    1. i0/Ī(q) − 1             in-focus contrast;
    2–4. q_x·Q_SCALE, q_y·Q_SCALE, |q|·Q_SCALE   constant maps, q in 1/Å, Q_SCALE = 0.5 Å;
    5. max(log10(Ī(q)/max_q Ī), −6)/6   constant map in [−1, 0]: how bright this pixel is on average
       (bright field ≈ 0, dark field → −1); the per-q normalisation of channels 0–1 hides it otherwise.

    Ī(q) is the per-sample scan mean of i0 at q, clipped below at 1e-3·max_q Ī (``ibar`` overrides
    the scan mean, so a tile can be normalised with the whole scan's mean pattern).

    Network: stem Conv(6→H, k) + GELU; then, with ``mixing``, a DeepSets/FiLM-like layer that lets every
    pixel see the whole pattern: the per-sample, per-position context c(r̂) = Σ_q i0(q, r̂)·h(q, r̂) /
    Σ_q i0(q, r̂) (intensity-weighted mean of the features over the detector) enters every pixel as
    h ← GELU(W_self h + b + W_ctx c) (1×1 convolutions); then ``depth − 2`` blocks Conv(H→H, k) + GELU;
    head Conv(H→2, k). No normalisation layers (nothing depends on the batch composition).

    Parameters
    ----------
    hidden : int
        H, feature channels per pixel.
    kernel_size : int
        Odd k of the scan-space convolutions.
    depth : int
        Number of k×k convolutions (stem + hidden blocks + head), ≥ 2.
    mixing : bool
        Add the detector-context layer after the stem.
    padding_mode : {"reflect", "replicate", "circular", "zeros"}

    Attributes
    ----------
    receptive_field : int
        depth·(k//2) scan positions on each side (the 1×1 mixing adds none).

    Notes
    -----
    Trainable parameters: 6·H·k² + H + (depth − 2)·(H²k² + H) + 2·H·k² + 2, plus 2·H² + H with mixing
    (:meth:`count_parameters`). Activation memory is about B·P·H·Rx·Ry values per layer; ``pixel_chunk``
    in :meth:`forward` bounds it at inference.
    """

    n_features = 6

    def __init__(self, hidden: int = 32, kernel_size: int = 3, depth: int = 4, mixing: bool = True,
                 padding_mode: str = "reflect"):
        super().__init__()
        _check_kernel_size(kernel_size)
        if depth < 2:
            raise ValueError(f"depth must be at least 2 (stem and head), got {depth}")
        _check_padding_mode(padding_mode)
        self.hidden = int(hidden)
        self.kernel_size = int(kernel_size)
        self.depth = int(depth)
        self.mixing = bool(mixing)
        self.padding_mode = padding_mode
        h, k = self.hidden, self.kernel_size
        self.act = nn.GELU()
        self.stem = _conv(self.n_features, h, k, padding_mode)
        if self.mixing:
            self.mix_self = nn.Conv2d(h, h, 1)
            self.mix_context = nn.Conv2d(h, h, 1, bias=False)
        self.body = nn.ModuleList([_conv(h, h, k, padding_mode) for _ in range(self.depth - 2)])
        self.head = _conv(h, 2, k, padding_mode)
        self.receptive_field = self.depth * (k // 2)

    @classmethod
    def count_parameters(cls, hidden: int = 32, kernel_size: int = 3, depth: int = 4, mixing: bool = True) -> int:
        """Trainable parameters; independent of the detector size."""
        h, k2 = hidden, kernel_size**2
        n = cls.n_features * h * k2 + h + (depth - 2) * (h * h * k2 + h) + 2 * h * k2 + 2
        return n + (2 * h * h + h if mixing else 0)

    def parameter_count_formula(self) -> int:
        """:meth:`count_parameters` for this model's sizes."""
        return self.count_parameters(self.hidden, self.kernel_size, self.depth, self.mixing)

    def config(self) -> dict:
        """JSON-able constructor description, for :func:`~flowtie_dask.model.registry.build_model`."""
        return {"name": type(self).__name__, "hidden": self.hidden, "kernel_size": self.kernel_size,
                "depth": self.depth, "mixing": self.mixing, "padding_mode": self.padding_mode}

    @staticmethod
    def features(didz: torch.Tensor, i0: torch.Tensor, q: torch.Tensor, ibar: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """Normalised per-pixel input channels (see the class docstring).

        Returns
        -------
        Tensor, shape (B, 6, P, Rx, Ry)
        """
        return join_features(*SharedFlowModel.feature_parts(didz, i0, q, ibar))

    @staticmethod
    def feature_parts(didz: torch.Tensor, i0: torch.Tensor, q: torch.Tensor, ibar: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`features` as the channels that vary over the scan, (B, 2, P, Rx, Ry), and those constant over
        it (q, brightness), (B, 4, P), not expanded (:func:`join_features` joins them)."""
        _check_inputs(didz, i0)
        b, p, rx, ry = didz.shape
        q = torch.as_tensor(q, dtype=didz.dtype, device=didz.device)
        if q.shape[-2:] != (p, 2):
            raise ValueError(f"q must be (P, 2) or (B, P, 2) with P = {p}, got {tuple(q.shape)}")
        q = q.expand(b, p, 2)
        raw = i0.mean(dim=(-2, -1)) if ibar is None else torch.as_tensor(
            ibar, dtype=i0.dtype, device=i0.device).expand(b, p)
        ib = mean_pattern(i0, raw)
        rel = raw / raw.amax(dim=1, keepdim=True).clamp_min(torch.finfo(i0.dtype).tiny)
        bright = torch.log10(rel.clamp_min(10.0**-BRIGHTNESS_DECADES)) / BRIGHTNESS_DECADES
        qf = torch.cat([q * Q_SCALE, q.norm(dim=-1, keepdim=True) * Q_SCALE, bright[..., None]], dim=-1)
        return torch.stack([didz * (DZ_REF / ib), i0 / ib - 1.0], dim=1), qf.permute(0, 2, 1)

    def input_features(self, didz, i0, q, *, ibar=None, optics=None) -> torch.Tensor:
        """The network's input channels, (B, n_features, P, Rx, Ry): :meth:`input_parts` joined."""
        return join_features(*self.input_parts(didz, i0, q, ibar=ibar, optics=optics))

    def input_parts(self, didz, i0, q, *, ibar=None, optics=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The input channels as (scan-varying (B, Cs, P, Rx, Ry), scan-constant (B, Cc, P)): :meth:`feature_parts`
        (``optics`` unused). The constant ones are per pixel (q, optics), so a pass over a chunk of pixels needs
        only that chunk expanded over the scan."""
        return self.feature_parts(didz, i0, q, ibar)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, p, Rx, Ry) features → (B·p, H, Rx, Ry)."""
        b, c, p, rx, ry = x.shape
        return self.act(self.stem(x.transpose(1, 2).reshape(b * p, c, rx, ry)))

    def forward(self, didz: torch.Tensor, i0: torch.Tensor | None = None, q: torch.Tensor | None = None, *,
                ibar: torch.Tensor | None = None, pixel_chunk: int | None = None, optics: dict | None = None
                ) -> torch.Tensor:
        """Predict u.

        Parameters
        ----------
        didz, i0 : Tensor, shape (B, P, Rx, Ry)
            ∂I/∂C10 (1/Å) and in-focus intensity (both required).
        q : Tensor, shape (P, 2) or (B, P, 2)
            1/Å.
        ibar : Tensor, shape (P,) or (B, P), optional
            Mean pattern to normalise with (default: the scan mean of ``i0``).
        pixel_chunk : int, optional
            Run the CNN on this many detector pixels at a time (the stem is computed twice when
            mixing); bounds activation memory. Same result as one chunk.
        optics : dict, optional
            Per-sample optics for models with dimensionless inputs
            (:class:`~flowtie_dask.model.dimensionless.DimensionlessFlowModel`); unused here.

        Returns
        -------
        Tensor, shape (B, 2, P, Rx, Ry)
            rad per scan step.
        """
        if i0 is None or q is None:
            raise ValueError("SharedFlowModel needs i0 and q as well as didz")
        scan, pixel = self.input_parts(didz, i0, q, ibar=ibar, optics=optics)
        b, _, p, rx, ry = scan.shape
        h_dim = self.hidden
        chunk = p if pixel_chunk is None else max(1, int(pixel_chunk))
        slices = [slice(s, min(s + chunk, p)) for s in range(0, p, chunk)]

        def x(sl):  # the chunk's input channels (the constant ones expanded over the scan for it alone)
            return join_features(scan[:, :, sl], pixel[:, :, sl])

        weights = i0.clamp_min(0.0)
        stem_cache = None
        ctx = None
        if self.mixing:
            num = scan.new_zeros(b, h_dim, rx, ry)
            den = scan.new_zeros(b, 1, rx, ry)
            for sl in slices:
                hs = self._stem(x(sl))
                w = weights[:, sl]
                num = num + (hs.view(b, -1, h_dim, rx, ry) * w[:, :, None]).sum(dim=1)
                den = den + w.sum(dim=1, keepdim=True)
                if len(slices) == 1:
                    stem_cache = hs
            ctx = self.mix_context(num / den.clamp_min(torch.finfo(scan.dtype).tiny))  # (B, H, Rx, Ry)
        outs = []
        for sl in slices:
            hs = stem_cache if stem_cache is not None else self._stem(x(sl))
            if self.mixing:
                n = sl.stop - sl.start
                hs = self.act((self.mix_self(hs).view(b, n, h_dim, rx, ry) + ctx[:, None]).view(b * n, h_dim, rx, ry))
            for conv in self.body:
                hs = self.act(conv(hs))
            outs.append(self.head(hs).view(b, -1, 2, rx, ry))
        return torch.cat(outs, dim=1).transpose(1, 2).contiguous()

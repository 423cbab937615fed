"""FlowTIE inside the reconstruction pipeline: a picklable phase method for
:func:`flowtie_dask.reconstruct.reconstruct_tile` (paper Algorithm 2, steps 2–3).

Per tile: ∂I/∂C10 and I₀ → model → forward-difference field u (rad per scan step) → least-squares
integration with the matching discrete operator (mirror boundary on tiles) → probe-frame phase, whose
per-q mean is set to the probe's phase like the TIE's. Exit waves and projection follow as for TIE.
The model is loaded once per worker process and runs on the worker's device (CPU, or its GPU with
CuPy↔torch through DLPack).

Fast form (``dark_field_bin=b > 1``, models that take each pixel's q): the network's cost is linear in the
number of detector pixels it runs on, and most pixels are dark field. Pixels with |q| ≤ (1 + margin)·α/λ
keep their own evaluation; the others are grouped b×b on the detector grid (blocks symmetric about the
detector centre, :func:`~flowtie_dask.model.superpixels.pixel_groups`) into super-pixels: the mean of
∂I/∂C10 and of I₀ over the members, q their mean, the block's extent as ``pixel_x``/``pixel_y`` for models
with optics inputs, and in the detector-mixing context the weight of all its members. Every member gets its
super-pixel's predicted field; integration and projection stay per pixel. ``dark_field_bin=1`` is the full
form (the model on each pixel, as before the fast form existed).

Symmetry averaging (``symmetry="mirror"`` or ``"d4"``): with a probe symmetric under the mirrors (only
C10, C30: no astigmatism), mirroring the specimen x → −x turns the data into I(−q_x, q_y; −r̂_x, r̂_y).
The detector-agnostic model takes every pixel's q as an input, so the mirrored experiment is fed by
reversing the scan axis and negating that q label, without moving a detector pixel; its prediction is
mapped back (reversed, negated, and shifted by one position since u is a forward difference) and the
predictions of the group's elements are averaged: 4 (the mirrors) or 8 (with the diagonal mirror, needing
equal scan steps). Cost: that many model evaluations. In the fast form the same is done on the
super-pixels (exactly equivariant when the partition is: no block edge on a pixel centre, a square
detector centred alike on both axes for "d4").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import from_torch, get_array_module, to_torch
from ..integrate import zero_mean_gradient
from ..tie import defocus_derivative, integrate_gradient
from .checkpoint import CheckpointError, check_compatible, default_model_path, load_checkpoint, shipped_model
from .optics_groups import optics_inputs
from .superpixels import (DEFAULT_DARK_FIELD_BIN, DEFAULT_MARGIN, group_field, group_means, grouped_network, pixel_groups,
                          spread)

__all__ = ["FlowTIEPhase", "SYMMETRIES", "DEFAULT_DARK_FIELD_BIN", "DEFAULT_MARGIN", "CPU_CHUNK"]

_CACHE: dict = {}
#: Groups per pass of the fast form on a CPU: passes that stay in the caches win (one thread, 96×96 positions:
#: 2–8 groups per pass ran 1.5–2.5× faster than 32–256).
CPU_CHUNK = 8

#: Group elements (transpose, flip x, flip y) averaged by each ``symmetry`` setting.
SYMMETRIES = {
    "none": [(False, False, False)],
    "mirror": [(False, False, False), (False, True, False), (False, False, True), (False, True, True)],
}
SYMMETRIES["d4"] = SYMMETRIES["mirror"] + [(True, fx, fy) for _, fx, fy in SYMMETRIES["mirror"]]


def _model_optics(model, geometry) -> dict | None:
    """The optics a model that ``takes_optics`` is fed (:func:`optics_inputs` and the scan's electrons per
    pattern, 0 for noise-free); None for a model of one optical setting."""
    if not getattr(model, "takes_optics", False):
        return None
    return dict(optics_inputs(geometry), electrons=float(geometry.electrons_per_pattern))


def _to_frame(x, q, element):
    """Data (B, P, hx, hy) and labels q (P, 2) of the transformed experiment (transpose, then flips)."""
    import torch

    swap, fx, fy = element
    q = q.clone()
    if swap:
        x = x.transpose(-2, -1)
        q = q[:, [1, 0]]
    if fx:
        x = torch.flip(x, dims=(-2,))
        q[:, 0] = -q[:, 0]
    if fy:
        x = torch.flip(x, dims=(-1,))
        q[:, 1] = -q[:, 1]
    return x.contiguous(), q


def _from_frame(u, element):
    """Forward-difference field (B, 2, P, h1, h2) of the transformed experiment in the original frame.

    The last position along a flipped axis has no counterpart (it would be the difference across the
    tile edge); it is returned as NaN and filled by the caller.
    """
    import torch

    swap, fx, fy = element
    ux, uy = u[:, 0], u[:, 1]

    def unflip(v, w, dim):  # v along the flipped axis: u(m) = −u'(N−2−m); w across it: reversed
        v = -torch.roll(torch.flip(v, dims=(dim,)), -1, dims=dim)
        v.select(dim, -1).fill_(float("nan"))
        return v, torch.flip(w, dims=(dim,))

    if fy:
        uy, ux = unflip(uy, ux, -1)
    if fx:
        ux, uy = unflip(ux, uy, -2)
    if swap:
        ux, uy = uy.transpose(-2, -1), ux.transpose(-2, -1)
    return torch.stack([ux, uy], dim=1)


class FlowTIEPhase:
    """Probe-frame phase of every pattern of a tile from a FlowTIE checkpoint.

    Parameters
    ----------
    path : str, optional
        Checkpoint, or the name of a shipped model (:data:`~flowtie_dask.model.checkpoint.SHIPPED_MODELS`:
        ``"general"``, the default, or ``"paper-64"``); the default when omitted.
    pixel_chunk : int, optional
        Detector pixels (or groups, in the fast form) per pass of the network; bounds memory to
        ~pixel_chunk·hidden·tile² floats. Default: 256 in the full form and on a GPU, :data:`CPU_CHUNK` in the
        fast form on a CPU (small passes stay in the caches).
    symmetry : {"none", "mirror", "d4"}
        Average the predictions over the specimen mirrors (4 model evaluations) or the square's
        symmetry group (8) — see the module docstring. Needs a model that takes q (the
        detector-agnostic one) and a probe without astigmatism; "d4" also equal scan steps.
    dark_field_bin : int
        Side b of the dark-field super-pixels of the fast form (module docstring); 1: the full form. Models
        that do not take each pixel's q (the paper's) always run the full form.
    margin : float
        Pixels with |q| ≤ (1 + margin)·α/λ are evaluated one by one in the fast form.
    """

    __name__ = "flowtie"

    def __init__(self, path: str | None = None, *, pixel_chunk: int | None = None, symmetry: str = "none",
                 dark_field_bin: int = DEFAULT_DARK_FIELD_BIN, margin: float = DEFAULT_MARGIN):
        import os

        if symmetry not in SYMMETRIES:
            raise ValueError(f"unknown symmetry {symmetry!r}: use one of {sorted(SYMMETRIES)}")
        if isinstance(dark_field_bin, bool) or int(dark_field_bin) != dark_field_bin or dark_field_bin < 1:
            raise ValueError(f"dark_field_bin must be an integer ≥ 1 (1: the full form), got {dark_field_bin!r}")
        if not margin >= 0:
            raise ValueError(f"margin must be ≥ 0 (fraction of the aperture radius), got {margin!r}")
        if pixel_chunk is not None and int(pixel_chunk) < 1:
            raise ValueError(f"pixel_chunk must be ≥ 1, got {pixel_chunk!r}")
        self.symmetry, self.dark_field_bin, self.margin = symmetry, int(dark_field_bin), float(margin)

        self.path = os.path.abspath(shipped_model(path) if path else default_model_path())
        if not os.path.isfile(self.path):
            if path is None:
                raise CheckpointError("no pretrained FlowTIE model is installed with this package; pass --model PATH "
                                      "(train one with 'flowtie-dask train') or use --method tie")
            raise CheckpointError(f"checkpoint {self.path!r} does not exist")
        self.pixel_chunk = None if pixel_chunk is None else int(pixel_chunk)
        model, self.meta = self._model("cpu")
        from .architectures import SharedFlowModel

        self.shared = isinstance(model, SharedFlowModel)
        if symmetry != "none" and not self.shared:
            raise ValueError(f"symmetry={symmetry!r} needs a model that takes each pixel's q "
                             f"(SharedFlowModel); {type(model).__name__} does not: use symmetry='none'")

    def _model(self, device: str):
        key = (self.path, device)
        if key not in _CACHE:
            model, meta, _ = load_checkpoint(self.path, map_location=device)
            _CACHE[key] = (model, meta)
        return _CACHE[key]

    @property
    def receptive_field(self) -> int:
        """Scan positions of context the model needs on each side of a position."""
        model, _ = self._model("cpu")
        return int(getattr(model, "receptive_field", 4))

    def check(self, geometry) -> None:
        """Raise :class:`CheckpointError` unless the scan's optics and sampling match the model's (a
        checkpoint without an optics record is refused: nothing could be checked), and ``ValueError`` when
        the scan breaks the symmetry asked for."""
        check_compatible(self.meta.get("optics"), geometry, source=repr(self.path))
        if self.symmetry == "none":
            return
        if abs(float(geometry.aberrations.get("C12", 0.0))) > 1e-6:
            raise ValueError(f"symmetry={self.symmetry!r} needs a probe without astigmatism (C12 = "
                             f"{geometry.aberrations['C12']:g} Å here): use symmetry='none'")
        if self.symmetry == "d4" and abs(geometry.scan_step[0] - geometry.scan_step[1]) > 1e-6 * geometry.scan_step[0]:
            raise ValueError(f"symmetry='d4' needs equal scan steps, got {tuple(geometry.scan_step)} Å: "
                             "use symmetry='mirror'")

    def field(self, intensity: Any, geometry, *, interior=None):
        """Predicted forward-difference field of every pattern of an oriented tile.

        Parameters
        ----------
        intensity : ndarray, shape (3, hx, hy, Qx, Qy)
        geometry : ReconstructionGeometry
        interior : (slice, slice), optional
            Return the field of these scan positions only (the rest of the tile is the model's context; the fast
            form then spreads its groups' fields onto those positions alone).

        Returns
        -------
        i0 : ndarray, shape (hx, hy, Qx, Qy)
        g : ndarray, shape (2, hx, hy, Qx, Qy), or (2, ix, iy, Qx, Qy) of the ``interior``
            ∂φ along the two scan axes as forward differences, rad/Å (same array module as the input).
        """
        import torch

        xp = get_array_module(intensity)
        if self.fast:
            i0, g, labels = self._grouped_field(intensity, geometry)
            if interior is not None:
                g = g[:, interior[0], interior[1]]
            return i0, spread(g, labels, xp).reshape(g.shape[:3] + i0.shape[2:])
        model, _ = self._model("cpu" if xp is np else "cuda")
        optics = _model_optics(model, geometry)
        didz, i0 = defocus_derivative(intensity, geometry.c10)
        hx, hy, nqx, nqy = i0.shape
        p = nqx * nqy

        def pixels_first(a):  # (hx, hy, Qx, Qy) → (1, P, hx, hy) float32 tensor
            return to_torch(xp.ascontiguousarray(xp.moveaxis(a.reshape(hx, hy, p), -1, 0)[None].astype(xp.float32)))

        with torch.no_grad():
            u = self._full_field(model, pixels_first(didz), pixels_first(i0), geometry, optics)
        u = from_torch(u[0])  # (2, P, hx, hy), rad per scan step
        g = xp.stack([xp.moveaxis(u[c], 0, -1).reshape(hx, hy, nqx, nqy) / geometry.scan_step[c] for c in (0, 1)])
        return i0, (g if interior is None else g[:, interior[0], interior[1]])

    def _full_field(self, model, didz_t, i0_t, geometry, optics):
        """The model on every pixel (and its mirrored experiments): (1, 2, P, hx, hy), rad per step."""
        import torch

        p = didz_t.shape[1]
        q = torch.from_numpy(geometry.q_labels(np).astype(np.float32))  # (P, 2), in the scan frame
        q = q.to(didz_t.device)
        chunk = self.pixel_chunk or 256
        kwargs = {"pixel_chunk": chunk} if "pixel_chunk" in model.forward.__code__.co_varnames else {}
        if optics is not None:
            kwargs["optics"] = optics
        u = model(didz_t, i0_t, q, **kwargs)
        if self.symmetry == "none":
            return u
        # mean over the elements that see each difference (those flipping an axis do not see
        # the last one along it), which keeps the average equivariant up to the tile edges
        total, count = u.clone(), torch.ones_like(u)
        for element in SYMMETRIES[self.symmetry][1:]:
            d, q_e = _to_frame(didz_t, q, element)
            i, _ = _to_frame(i0_t, q, element)
            back = _from_frame(model(d, i, q_e, **kwargs), element)
            seen = ~torch.isnan(back)
            total += torch.where(seen, back, 0.0)
            count += seen
        return total / count

    @property
    def fast(self) -> bool:
        """Whether :meth:`field` runs the fast form (``dark_field_bin`` > 1 and a model that takes q)."""
        return self.dark_field_bin > 1 and self.shared

    def _grouped_field(self, intensity, geometry):
        """The fast form (module docstring) on an oriented tile (3, hx, hy, Qx, Qy).

        Returns
        -------
        i0 : ndarray, shape (hx, hy, Qx, Qy)
        g : ndarray, shape (2, hx, hy, G)
            Each group's field, rad/Å.
        labels : ndarray, shape (P,), int64
            Each pixel's group (same array module as the input).
        """
        import torch

        xp = get_array_module(intensity)
        model, _ = self._model("cpu" if xp is np else "cuda")
        optics = _model_optics(model, geometry)
        groups = pixel_groups(geometry, self.dark_field_bin, self.margin)
        lo, mid, hi = (int(i) for i in np.argsort(np.asarray(geometry.c10, dtype=float)))
        span = float(geometry.c10[hi]) - float(geometry.c10[lo])
        if not span > 0:
            raise ValueError(f"the defocus values {geometry.c10} must differ")
        _, hx, hy, nqx, nqy = intensity.shape
        flat = [to_torch(xp.ascontiguousarray(intensity[k]).reshape(hx * hy, nqx * nqy)) for k in (lo, mid, hi)]
        dev = flat[0].device
        labels, count = torch.from_numpy(groups.labels).to(dev), torch.from_numpy(groups.count).to(dev)

        def pixels_first(a):  # (S, G) → (1, G, hx, hy) float32
            return a.to(torch.float32).T.reshape(1, -1, hx, hy).contiguous()

        i_lo, i_mid, i_hi = (group_means(f, labels, count) for f in flat)
        didz_g, i0_g = pixels_first((i_hi - i_lo) / span), pixels_first(i_mid)
        q = torch.from_numpy(groups.q.astype(np.float32)).to(dev)
        size = torch.from_numpy(groups.size.astype(np.float32)).to(dev)
        weight = count.to(torch.float32)[:, None, None]
        chunk = self.pixel_chunk or (CPU_CHUNK if dev.type == "cpu" else 256)
        workers = torch.get_num_threads() if dev.type == "cpu" else 1  # passes spread over torch's threads

        def run(d, i, q_e, swap):
            opt = None
            if optics is not None:  # each group's own extent as its pixel size (swapped with the scan axes), and
                # its members' electrons (a group's mean over m pixels counts m times a pixel's electrons)
                opt = dict(optics, pixel_x=size[:, 1 if swap else 0], pixel_y=size[:, 0 if swap else 1],
                           electrons=optics["electrons"] * count.to(torch.float32))
            x = model.input_parts(d, i, q_e, optics=opt)  # constant channels not expanded over the scan
            return grouped_network(model, x, i.clamp_min(0.0) * weight, chunk, workers)

        with torch.no_grad():
            u = self._grouped_symmetric(run, didz_g, i0_g, q)
        return intensity[mid], group_field(u, geometry.scan_step, xp), xp.asarray(groups.labels)

    def _grouped_symmetric(self, run, didz_g, i0_g, q):
        """``run`` on the groups, averaged over the symmetry's elements: (1, 2, G, hx, hy), rad per step."""
        import torch

        u = run(didz_g, i0_g, q, False)
        if self.symmetry != "none":
            total, seen_count = u.clone(), torch.ones_like(u)
            for element in SYMMETRIES[self.symmetry][1:]:
                d, q_e = _to_frame(didz_g, q, element)
                i, _ = _to_frame(i0_g, q, element)
                back = _from_frame(run(d, i, q_e, element[0]), element)
                seen = ~torch.isnan(back)
                total += torch.where(seen, back, 0.0)
                seen_count += seen
            u = total / seen_count
        return u

    def __call__(self, intensity: Any, geometry, *, boundary: str):
        """Return ``(i0, phase)``, both (hx, hy, Qx, Qy), for an oriented tile (3, hx, hy, Qx, Qy).

        In the fast form the members of a group share one field, hence one integrated phase: each group's field
        is integrated once and the phase given to its members (integration is linear and per pixel)."""
        xp = get_array_module(intensity)
        if self.fast:
            i0, g, labels = self._grouped_field(intensity, geometry)
        else:
            i0, g = self.field(intensity, geometry)
        gx, gy = zero_mean_gradient(g[0], g[1], boundary=boundary)  # no ramp from the model's offset (non-periodic)
        phase = integrate_gradient(gx, gy, step=geometry.scan_step, kind="forward", boundary=boundary)
        if self.fast:
            phase = spread(phase, labels, xp).reshape(i0.shape)
        phase = phase + xp.angle(geometry.probe_spectrum(xp)).astype(phase.dtype)[None, None]
        return i0, phase

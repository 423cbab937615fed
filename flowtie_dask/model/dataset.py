"""Training samples read lazily from scan stores: random scan tiles of defocus series with their
probe-frame truth, as torch tensors (DESIGN §3 conventions; scan axes last, detector pixels flattened).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np

from ..backend import require_memory
from ..geometry import ReconstructionGeometry
from ..simulate.collection import open_collection
from ..store import electrons_per_pattern, intensity_scale, open_scan_store
from ..tie import defocus_derivative
from .optics_groups import optics_inputs

__all__ = ["TileSpec", "split_members", "TileDataset"]


@dataclass(frozen=True)
class TileSpec:
    """How samples are cut.

    Attributes
    ----------
    tile : int
        Scan positions per side of a sample.
    n_q : int or None
        Detector pixels drawn per sample (None = all); drawn with probability ∝ √(mean intensity)
        so the dark field is represented without drowning the bright field.
    dose : (float, float) or None
        Poisson noise at N e⁻ per pattern, N drawn per tile log-uniformly from this range, on the three scans of
        a simulated (float) store, whose patterns are normalised to unit sum; None for noise-free tiles. Stores
        of counts (or simulated with shot noise) are used as they are: they hold their own noise, and their
        ``electrons`` is the store's (:func:`~flowtie_dask.store.electrons_per_pattern`).
    noise_free_fraction : float
        With ``dose``: the fraction of tiles left noise-free.
    """

    tile: int = 16
    n_q: int | None = 256
    dose: tuple[float, float] | None = None
    noise_free_fraction: float = 0.2


def split_members(path, *, validation: float = 0.1, seed: int = 0):
    """Split a collection's stores into training and validation sets (by structure, seeded).

    Parameters
    ----------
    path : str or list of str
        A collection folder (or scan store); several are split one by one and the parts concatenated.
    validation : float
        Fraction of each collection's structures held out (at least one when it has two or more).
    seed : int

    Returns
    -------
    train, validation : list of str
    """
    if not isinstance(path, (str, os.PathLike)):
        parts = [split_members(p, validation=validation, seed=seed) for p in path]
        if not parts:
            raise ValueError("no training data given")
        return [s for t, _ in parts for s in t], [s for _, v in parts for s in v]
    members = open_collection(path)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(members))
    n_val = max(1, int(round(validation * len(members)))) if len(members) > 1 else 0
    val = sorted(members[i] for i in order[:n_val])
    train = sorted(members[i] for i in order[n_val:])
    return train, val


class _Scaled:
    """An intensity array read with its store's counts scale (or as it is when there is none)."""

    def __init__(self, array, scale):
        self.array, self.scale = array, scale

    def __getitem__(self, index):
        block = np.asarray(self.array[index], dtype=np.float32)
        return block if self.scale is None else block * self.scale[index[0] if isinstance(index, tuple) else index]


class TileDataset:
    """A map-style torch dataset of random tiles from scan stores with ``truth/probe_frame_phase``.

    Item ``i`` is deterministic (seeded by ``seed`` and ``i``). Each item is a dict of tensors:
    ``didz`` (P, T, T) 1/Å, ``i0`` (P, T, T), ``phase`` (P, T, T) rad, ``weight`` (P, T, T),
    ``q`` (P, 2) 1/Å, floats ``wavelength`` (Å), ``step`` (2,) Å, ``electrons`` (e⁻ per pattern of the
    noise drawn, 0 for none), and the model's optics inputs
    (:data:`~flowtie_dask.model.optics_groups.OPTICS_INPUTS`, float64 scalars: Å, rad, 1/Å).

    Parameters
    ----------
    stores : list of str
        Scan stores (all with the same detector size when ``n_q`` is None).
    spec : TileSpec
    length : int
        Items per epoch.
    seed : int
    in_memory : bool
        Read every store's intensities and truth into host memory once, here (threads over stores), instead
        of reading each tile from Zarr. A random tile overlaps up to four scan chunks of every defocus, so a
        lazy read decompresses up to 16× the tile; held in memory, a GPU is no longer waiting for reads.
        Needs the stores' float32 size in free memory (checked first: a ValueError says how much). Items are
        identical either way. Forked DataLoader workers share the arrays; spawned ones would each reload them.
    """

    def __init__(self, stores, spec: TileSpec = TileSpec(), *, length: int = 256, seed: int = 0,
                 in_memory: bool = False):
        if not stores:
            raise ValueError("no training stores")
        self.stores = list(stores)
        self.spec = spec
        self.length = int(length)
        self.seed = int(seed)
        self.in_memory = bool(in_memory)
        self._open = {}
        #: store path → its ReconstructionGeometry
        self.geometries = {}
        need = 0
        for s in self.stores:
            st = open_scan_store(s)
            if st.truth is None or "probe_frame_phase" not in st.truth:
                raise ValueError(f"{s!r} has no truth/probe_frame_phase: simulate training data with --probe-frame")
            if min(st.scan_shape) < spec.tile:
                raise ValueError(f"{s!r} has a {st.scan_shape} scan, smaller than the {spec.tile}-position tile")
            self.geometries[s] = ReconstructionGeometry.from_metadata(st.metadata, scan_shape=st.scan_shape,
                                                                      detector_shape=st.detector_shape)
            need += 4 * (int(np.prod(st.intensity.shape)) + int(np.prod(st.truth["probe_frame_phase"].shape)))
        if self.in_memory:
            require_memory(need, device="cpu", what=f"holding {len(self.stores)} stores in memory",
                           instead="train without --in-memory (tiles are then read from Zarr)")
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(8, len(self.stores))) as pool:
                for path, entry in zip(self.stores, pool.map(self._load, self.stores)):
                    self._open[path] = entry
        self.nbytes = need

    def __len__(self) -> int:
        return self.length

    def __getstate__(self):  # DataLoader workers (spawned) reopen (and, in memory, reload) the stores themselves
        return {**self.__dict__, "_open": {}}

    def _load(self, path):
        """(intensity, truth phase, geometry, mean in-focus pattern): Zarr arrays, or NumPy ones in memory."""
        st = open_scan_store(path)
        geo = self.geometries[path]
        inten, phase = st.intensity, st.truth["probe_frame_phase"]
        scale = intensity_scale(inten)  # a store of counts: normalised = stored × scale[defocus]
        scale = None if scale is None else scale.astype(np.float32)[:, None, None, None, None]
        if self.in_memory:
            inten, phase = np.asarray(inten[...], dtype=np.float32), np.asarray(phase[...], dtype=np.float32)
            if scale is not None:
                inten *= scale
                scale = None
        mean = np.asarray(inten[1, :: max(1, st.scan_shape[0] // 8), :: max(1, st.scan_shape[1] // 8)],
                          dtype=np.float32)
        if scale is not None:
            mean = mean * scale[1, 0]
        counts = np.dtype(st.intensity.dtype).kind in "ui"
        geo = replace(geo, electrons_per_pattern=electrons_per_pattern(st))  # a store of counts or noisy simulation
        return (inten if scale is None else _Scaled(inten, scale)), phase, geo, mean.mean(axis=(0, 1)).ravel(), counts

    def _store(self, path):
        if path not in self._open:
            self._open[path] = self._load(path)
        return self._open[path]

    def __getitem__(self, index: int):
        import torch

        rng = np.random.default_rng([self.seed, int(index)])
        intensity, truth, geo, mean_pattern, counts = self._store(self.stores[rng.integers(len(self.stores))])
        t = self.spec.tile
        x0 = int(rng.integers(0, geo.scan_shape[0] - t + 1))
        y0 = int(rng.integers(0, geo.scan_shape[1] - t + 1))
        inten = np.asarray(intensity[:, x0:x0 + t, y0:y0 + t], dtype=np.float32)
        phase = np.asarray(truth[x0:x0 + t, y0:y0 + t], dtype=np.float32)
        clean_i0 = inten[geo.focus_index]
        electrons = geo.electrons_per_pattern  # the store's own noise (0: noise-free)
        if (self.spec.dose is not None and not counts and not electrons
                and rng.random() >= self.spec.noise_free_fraction):
            lo, hi = self.spec.dose
            electrons = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            inten = (rng.poisson(np.clip(inten, 0, None) * electrons) / electrons).astype(np.float32)
        didz, i0 = defocus_derivative(inten, geo.c10)
        p = i0.shape[-1] * i0.shape[-2]
        qx, qy = geo.q_vectors()
        q = np.stack(np.meshgrid(qx, qy, indexing="ij"), -1).reshape(p, 2)
        if self.spec.n_q is not None and self.spec.n_q < p:
            w = np.sqrt(np.clip(mean_pattern, 0, None)) + 1e-12
            pick = np.sort(rng.choice(p, size=self.spec.n_q, replace=False, p=w / w.sum()))
        else:
            pick = np.arange(p)

        def flat(a):  # (T, T, Qx, Qy) → (P', T, T)
            return np.ascontiguousarray(np.moveaxis(a.reshape(t, t, p)[:, :, pick], -1, 0))

        i0f, cleanf = flat(i0), flat(clean_i0)
        weight = cleanf / max(float(cleanf.mean()), 1e-12)  # the loss weights the truth by the noise-free intensity
        optics = {k: torch.tensor(v, dtype=torch.float64) for k, v in optics_inputs(geo).items()}
        return {
            "didz": torch.from_numpy(flat(didz)),
            "i0": torch.from_numpy(i0f),
            "phase": torch.from_numpy(flat(phase)),
            "weight": torch.from_numpy(weight.astype(np.float32)),
            "q": torch.from_numpy(q[pick].astype(np.float32)),
            "wavelength": torch.tensor(geo.wavelength, dtype=torch.float64),
            "step": torch.tensor(geo.scan_step, dtype=torch.float64),
            "electrons": torch.tensor(electrons, dtype=torch.float64),
            **optics,
        }



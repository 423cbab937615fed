"""Training FlowTIE (paper Algorithm 1) on scan stores with probe-frame truth: AdamW, epochs of random
tiles, train/validation split by structure, checkpoints every K epochs, resume.

Multi-GPU: the loop is plain torch; run it under ``torchrun --nproc-per-node N`` with ``ddp=True`` (the
CLI's ``--ddp``) to wrap the model in DistributedDataParallel with one process per GPU. Each rank draws
its own tiles (seeded by rank), gradients are averaged by DDP, rank 0 writes checkpoints.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..physics.constants import wavelength
from .checkpoint import dimensionless_record, load_checkpoint, optics_record, save_checkpoint
from .dataset import TileDataset, TileSpec, split_members
from .optics_groups import OPTICS_INPUTS

__all__ = ["TrainingConfig", "TrainingError", "train", "COSINE_FLOOR", "scheduled_lr"]


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); one line naming the step and the fix."""

#: The cosine schedule ends at this fraction of the configured learning rate.
COSINE_FLOOR = 0.05


@dataclass
class TrainingConfig:
    """Training settings.

    Attributes
    ----------
    epochs : int
    batch_size : int
        Tiles per step.
    lr : float
        AdamW learning rate (paper: 1e-4).
    lr_schedule : {"constant", "cosine"}
        cosine: per epoch, lr·(f + (1 − f)·½(1 + cos πp)) with f = :data:`COSINE_FLOOR` and p the run's
        progress, the larger of (epochs done in this run)/(epochs this run) and elapsed/``time_limit``
        — a resumed run starts its own decay.
    time_limit : float or None
        Seconds of training after which the run stops at the end of the current epoch (and checkpoints).
    weight_decay : float
    alpha, beta, gamma : float
        Weights of L_vf, L_cont, L_phase (paper: 1, 1, 1).
    tile : int
        Scan positions per side of a training tile.
    n_q : int or None
        Detector pixels per tile (None = all).
    steps_per_epoch : int
    validation_tiles : int
    checkpoint_every : int
        Epochs between checkpoints.
    seed : int
    device : str
        "cpu" or "cuda".
    loader_workers : int
        Processes cutting tiles (torch DataLoader; spawned, or forked with ``in_memory``); 0 cuts them in
        the training process.
        Reading, not the model, limits a GPU: a 16×16×256 tile takes ~0.1 s on one core.
    in_memory : bool
        Hold the training and validation stores in host memory (read once, see
        :class:`~flowtie_dask.model.dataset.TileDataset`); for a GPU with a collection that fits in RAM.
        Loader workers are then forked and share that memory (they cut tiles, they never touch CUDA).
    init_from : str or None
        Start from this checkpoint's architecture and weights (fine-tuning, e.g. the shipped default for other
        optics) with a fresh optimiser, epoch count and history; its training record joins ``stages``.
    architecture : dict
        ``{"name": "SharedFlowModel" | "FlowPredictorModel" | "DimensionlessFlowModel", **kwargs}``; ignored when
        resuming or initialising from a checkpoint (its architecture is used) — except that a
        DimensionlessFlowModel initialised from a SharedFlowModel checkpoint starts as its exact equivalent at that
        checkpoint's optics (:func:`~flowtie_dask.model.dimensionless.from_shared`).
    dose : [low, high] or None
        Poisson noise at N e⁻ per pattern drawn per tile log-uniformly from this range (float stores only);
        the checkpoint records it.
    noise_free_fraction : float
        With ``dose``: the fraction of tiles kept noise-free.
    """

    epochs: int = 10
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 1e-4
    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 1.0
    tile: int = 16
    n_q: int | None = 256
    steps_per_epoch: int = 50
    validation_tiles: int = 16
    checkpoint_every: int = 1
    seed: int = 0
    device: str = "cpu"
    loader_workers: int = 0
    lr_schedule: str = "constant"
    time_limit: float | None = None
    in_memory: bool = False
    init_from: str | None = None
    architecture: dict = field(default_factory=lambda: {"name": "SharedFlowModel"})
    dose: list | None = None
    noise_free_fraction: float = 0.2


def scheduled_lr(config: "TrainingConfig", progress: float) -> float:
    """Learning rate at a run's progress ``progress`` ∈ [0, 1] (see ``TrainingConfig.lr_schedule``).

    Returns
    -------
    float
        ``config.lr`` for the constant schedule; the cosine from ``config.lr`` down to
        ``COSINE_FLOOR · config.lr`` otherwise.
    """
    if config.lr_schedule == "constant":
        return config.lr
    if config.lr_schedule != "cosine":
        raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}: use 'constant' or 'cosine'")
    p = min(max(float(progress), 0.0), 1.0)
    return config.lr * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * p)))


class _RandomIndices:
    """Endless seeded stream of dataset indices: the training DataLoader's sampler."""

    def __init__(self, n: int, rng):
        self.n, self.rng = n, rng

    def __iter__(self):
        while True:
            yield int(self.rng.integers(self.n))


def _training_batches(dataset, batch_size, rng, workers, pin):
    """Endless iterator of stacked batches (dicts of tensors with a leading batch axis)."""
    import multiprocessing

    from torch.utils.data import DataLoader

    # A collection held in memory is shared with forked workers (copy-on-write, read-only); otherwise workers
    # are spawned and open the stores themselves (fork after CUDA starts is not safe for code that uses it).
    fork = getattr(dataset, "in_memory", False) and "fork" in multiprocessing.get_all_start_methods()
    extra = dict(multiprocessing_context="fork" if fork else "spawn", prefetch_factor=4,
                 persistent_workers=True) if workers else {}
    return iter(DataLoader(dataset, batch_size=batch_size, sampler=_RandomIndices(len(dataset), rng),
                           num_workers=workers, pin_memory=pin, **extra))


def _agreed(value, ddp: bool):
    """The largest of ``value`` over the DDP ranks (so all ranks stop, and step, alike); ``value`` alone without."""
    if not ddp:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64,
                     device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return type(value)(t.item()) if not isinstance(value, bool) else bool(t.item())


def _abspaths(data):
    """The data argument as recorded in a checkpoint: one absolute path, or a list of them."""
    if isinstance(data, (str, os.PathLike)):
        return os.path.abspath(data)
    return [os.path.abspath(d) for d in data]


def _batches(dataset, batch_size, rng, steps):
    import torch

    for _ in range(steps):
        idx = rng.integers(0, len(dataset), size=batch_size)
        items = [dataset[int(i)] for i in idx]
        yield {k: torch.stack([it[k] for it in items]) for k in items[0]}


def _loss(model, batch, cfg, device):
    """The loss of one batch; each tile keeps its own q, wavelength and step (a batch may mix optics)."""
    from .losses import flowtie_loss

    b = {k: v.to(device) for k, v in batch.items()}
    kwargs = {}
    if getattr(getattr(model, "module", model), "takes_optics", False):  # DDP wraps the model in .module
        kwargs["optics"] = {k: b[k].to(b["didz"].dtype) for k in OPTICS_INPUTS + ("electrons",)}
    u = model(b["didz"], b["i0"], b["q"], **kwargs)
    return flowtie_loss(u, b, alpha=cfg.alpha, beta=cfg.beta, gamma=cfg.gamma,
                        wavelength=b["wavelength"].to(b["didz"].dtype), step=b["step"].to(b["didz"].dtype),
                        boundary="mirror")


def _dimensionless_from(model, meta):
    """The DimensionlessFlowModel equal to a SharedFlowModel checkpoint at the middle of its recorded optics."""
    from .dimensionless import from_shared

    rec = meta.get("optics") or {}
    try:
        step = sum(rec["scan_step_A"]) / 2
        pixel = sum(rec["detector_sampling_invA"]) / 2
        optics = {"wavelength": wavelength(rec["energy_eV"]), "semiangle": rec["semiangle_mrad"] * 1e-3,
                  "step_x": step, "step_y": step, "defocus_step": rec["defocus_step_A"], "cs": 0.0, "edge": 0.0,
                  "pixel_x": pixel, "pixel_y": pixel}
    except (KeyError, TypeError) as exc:
        raise ValueError(f"--init checkpoint has no usable optics record ({exc}) to start a DimensionlessFlowModel "
                         "from") from None
    return from_shared(model, optics)


def _non_finite(value: float, which: str, epoch: int, step, config, out: str) -> str:
    """The one-line message for a non-finite loss."""
    where = f"epoch {epoch + 1}, step {step} of {config.steps_per_epoch}" if step else f"epoch {epoch + 1}"
    kept = (f"{out!r} was left as it was (no weights of this epoch were saved)" if os.path.exists(out)
            else "no checkpoint was written")
    return (f"the {which} loss became {value} at {where} (lr {config.lr:g}): lower --lr, or check the data and "
            f"the loss weights for non-finite values; {kept}")


def train(data, out: str, config: TrainingConfig, *, resume: bool = False, progress: bool = True,
          ddp: bool = False, log=print) -> dict:
    """Train a model on a collection (or one store) with probe-frame truth and write checkpoints.

    Parameters
    ----------
    data : str or list of str
        Collection folder from ``flowtie-dask simulate random-cubic --count N`` or one scan store; or several,
        each split 0.9/0.1 by structure and the parts joined (so collections simulated apart train together).
    out : str
        Checkpoint path (``*.pt``); also written every ``checkpoint_every`` epochs.
    config : TrainingConfig
    resume : bool
        Continue from ``out`` (weights, optimiser, epoch, history).
    progress : bool
        tqdm bar per epoch with the running train loss.
    ddp : bool
        DistributedDataParallel under torchrun (one process per GPU).

    Returns
    -------
    dict
        ``history``: per-epoch train/validation losses and their three terms; ``seconds``.
    """
    import torch

    from .registry import build_model

    scheduled_lr(config, 0.0)  # an unknown schedule stops here, before anything is read
    if resume and config.init_from:
        raise ValueError("give --resume (continue this checkpoint) or --init (start from another's weights), not both")
    if config.init_from and not os.path.isfile(config.init_from):
        raise ValueError(f"--init checkpoint {config.init_from!r} does not exist")
    if resume and not os.path.isfile(out):
        raise ValueError(f"--resume continues the checkpoint {out!r}, which does not exist: train without --resume")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise ValueError(f"the folder {parent!r} for the checkpoint does not exist")
    for name in ("alpha", "beta", "gamma", "lr", "weight_decay"):
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"the training setting {name} = {value!r} must be a finite number ≥ 0")
    device = config.device
    if device == "cuda":  # this process's GPU, set before NCCL starts
        if not torch.cuda.is_available():
            raise RuntimeError("no GPU found: train with --device cpu")
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    rank, world = 0, 1
    if ddp:
        import torch.distributed as dist

        dist.init_process_group("nccl" if config.device == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    loaded = None
    if resume or config.init_from:  # checked (and kept) before any data is read; the RNG is left as it was
        with torch.random.fork_rng(devices=[]):
            loaded = load_checkpoint(out if resume else config.init_from, map_location=device)
    torch.manual_seed(config.seed + rank)
    train_stores, val_stores = split_members(data, seed=config.seed)
    if not val_stores:
        val_stores = train_stores
    spec = TileSpec(tile=config.tile, n_q=config.n_q, dose=tuple(config.dose) if config.dose else None,
                    noise_free_fraction=config.noise_free_fraction)
    t_load = time.perf_counter()
    train_set = TileDataset(train_stores, spec, length=10**6, seed=config.seed + 1000 * rank,
                            in_memory=config.in_memory)
    val_set = TileDataset(val_stores, spec, length=config.validation_tiles, seed=config.seed + 999,
                          in_memory=config.in_memory)
    if config.in_memory and rank == 0:
        log(f"read {len(train_stores) + len(val_stores)} stores "
            f"({(train_set.nbytes + val_set.nbytes) / 2**30:.1f} GiB) into memory in {time.perf_counter() - t_load:.0f} s")
    geos = list(train_set.geometries.values())
    geo = geos[0]
    history, start_epoch, stages = [], 0, []  # stages: the training records of the runs this one continues
    if resume or config.init_from:  # the architecture is the checkpoint's
        model, meta, payload = loaded
        wanted = config.architecture.get("name") if config.init_from else None
        if wanted in ("DimensionlessFlowModel", "DoseAwareFlowModel") and type(model).__name__ == "SharedFlowModel":
            model = _dimensionless_from(model, meta).to(device)
        if wanted == "DoseAwareFlowModel" and type(model).__name__ == "DimensionlessFlowModel":
            from .dimensionless import with_dose_input

            model = with_dose_input(model.cpu()).to(device)  # the noise channel at zero weight: the same model
        model.train()
        earlier = dict(meta.get("training", {}))
        stages = earlier.pop("stages", []) + ([earlier] if earlier else [])
    else:
        arch = dict(config.architecture)
        if arch.get("name") == "FlowPredictorModel":
            arch.setdefault("n_pixels", config.n_q or geo.detector_shape[0] * geo.detector_shape[1])
        model = build_model(arch).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if resume:
        if "optimizer" in payload:
            opt.load_state_dict(payload["optimizer"])
        history, start_epoch = meta.get("history", []), int(meta.get("epoch", 0))
    net = model
    if ddp:
        net = torch.nn.parallel.DistributedDataParallel(model)
    rng = np.random.default_rng([config.seed, rank, start_epoch])
    stream = _training_batches(train_set, config.batch_size, rng, config.loader_workers, device.startswith("cuda"))
    t0 = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        progress_run = (epoch - start_epoch) / max(1, config.epochs - start_epoch)
        if config.time_limit:
            progress_run = max(progress_run, (time.perf_counter() - t0) / config.time_limit)
        lr = scheduled_lr(config, _agreed(progress_run, ddp))
        for group in opt.param_groups:
            group["lr"] = lr
        net.train()
        terms_sum, n = {}, 0
        batches = (next(stream) for _ in range(config.steps_per_epoch))
        if progress and rank == 0:
            from tqdm import tqdm

            batches = tqdm(batches, total=config.steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}",
                           file=sys.stderr, leave=False)
        try:
            for step, batch in enumerate(batches, start=1):
                total, terms = _loss(net, batch, config, device)
                if _agreed(not bool(torch.isfinite(total.detach()).all()), ddp):  # before the step spoils the weights
                    raise TrainingError(_non_finite(float(total.detach()), "training", epoch, step, config, out))
                opt.zero_grad()
                total.backward()
                opt.step()
                n += 1
                for k, v in {"total": total, **terms}.items():
                    terms_sum[k] = terms_sum.get(k, 0.0) + float(v.detach())
                if progress and rank == 0:
                    batches.set_postfix(loss=f"{terms_sum['total'] / n:.4g}")
        finally:
            if hasattr(batches, "close"):  # a bar left open would print after the error
                batches.close()
        net.eval()
        val_sum = {}
        with torch.no_grad():
            vrng = np.random.default_rng([config.seed, 99])
            for batch in _batches(val_set, config.batch_size, vrng, max(1, config.validation_tiles // config.batch_size)):
                total, terms = _loss(net, batch, config, device)
                for k, v in {"total": total, **terms}.items():
                    val_sum.setdefault(k, []).append(float(v))
        bad = [v for v in val_sum.get("total", []) if not math.isfinite(v)]
        if bad:
            raise TrainingError(_non_finite(bad[0], "validation", epoch, None, config, out))
        row = {"epoch": epoch + 1, "train": {k: v / n for k, v in terms_sum.items()},
               "validation": {k: float(np.mean(v)) for k, v in val_sum.items()},
               "seconds": time.perf_counter() - t0, "lr": lr}
        history.append(row)
        timed_out = bool(config.time_limit) and _agreed(row["seconds"] >= config.time_limit, ddp)
        if rank == 0:
            log(f"epoch {epoch + 1}: train {row['train']['total']:.5g}  validation {row['validation']['total']:.5g}  "
                f"lr {lr:.3g}  ({row['seconds']:.0f} s)")
            if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs or timed_out:
                save_checkpoint(out, model=model, optimizer=opt, meta={
                    "optics": (dimensionless_record(geos, dose=config.dose) if getattr(model, "takes_optics", False)
                               else optics_record(geos)),
                    "training": {**asdict(config), "data": _abspaths(data), "train_stores": len(train_stores),
                                 "validation_stores": len(val_stores), "world_size": world, "stages": stages},
                    "epoch": epoch + 1, "history": history})
        if timed_out:
            if rank == 0:
                log(f"stopped after epoch {epoch + 1}: time limit {config.time_limit:g} s reached")
            break
    if ddp:
        import torch.distributed as dist

        dist.destroy_process_group()
    return {"history": history, "seconds": time.perf_counter() - t0}



"""``flowtie-dask train DATA --out model.pt``: train a FlowTIE model on simulated stores with probe-frame truth."""

from __future__ import annotations

import argparse
import math
import sys

from ..atomic import check_output, claim_output
from ..model.checkpoint import default_model_path, shipped_model
from ..model.train import TrainingConfig, train
from .options import nonnegative_int, positive_float, positive_int


def loss_weight(text: str) -> float:
    """argparse type: a finite number ≥ 0 (a NaN or infinite weight would make every loss non-finite)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"{v} must be a finite number ≥ 0")
    return v


def add_parser(sub) -> None:
    """Register the ``train`` sub-command."""
    p = sub.add_parser(
        "train", help="train a FlowTIE model on a simulated collection",
        description=("AdamW on random scan tiles of a collection from 'simulate random-cubic --count N' "
                     "(0.9/0.1 train/validation split by structure, seeded), loss α·L_vf + β·L_cont + γ·L_phase. "
                     "Checkpoints record the architecture, optics, sampling, configuration and version. "
                     "Multi-GPU: torchrun --nproc-per-node N -m flowtie_dask.cli.main train … --device cuda --ddp"),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("data", metavar="DATA", nargs="+",
                   help="collection folder(s) (or scan stores) with truth/probe_frame_phase; several train together")
    p.add_argument("--out", required=True, metavar="MODEL",
                   help="checkpoint to write (*.pt); an existing file is refused unless --overwrite or --resume")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (it is kept until the first new checkpoint is complete)")
    p.add_argument("--architecture", choices=("dimensionless", "dose-aware", "shared", "paper"),
                   default="dimensionless",
                   help="dimensionless: DimensionlessFlowModel, inputs in units of the optics (one model across "
                        "microscopes; --init from a shared model starts as its exact equivalent); dose-aware: "
                        "DoseAwareFlowModel, the same plus each pixel's relative shot noise (--init from a "
                        "dimensionless or shared model starts as its exact equivalent); shared: "
                        "SharedFlowModel for one optical setting; paper: the paper's FlowPredictorModel")
    p.add_argument("--hidden", type=positive_int, default=None, help="feature channels (default: the model's)")
    p.add_argument("--depth", type=positive_int, default=None,
                   help="k×k convolutions of the shared model, ≥ 2 (default: the model's)")
    p.add_argument("--epochs", type=positive_int, default=10, help="passes of --steps-per-epoch steps each")
    p.add_argument("--steps-per-epoch", type=positive_int, default=50, help="optimiser steps per epoch")
    p.add_argument("--batch-size", type=positive_int, default=4, help="tiles per step")
    p.add_argument("--lr", type=positive_float, default=1e-4, help="AdamW learning rate")
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="cosine: lr decays to lr/20 over this run's epochs (or its --time-limit, whichever ends first)")
    p.add_argument("--time-limit", type=positive_float, default=None, metavar="SECONDS",
                   help="stop after the epoch that reaches this many seconds of training (checkpoint written)")
    p.add_argument("--alpha", type=loss_weight, default=1.0, help="weight of L_vf (vector field)")
    p.add_argument("--beta", type=loss_weight, default=1.0, help="weight of L_cont (continuity)")
    p.add_argument("--gamma", type=loss_weight, default=1.0, help="weight of L_phase (phase on the complex wave)")
    p.add_argument("--tile", type=positive_int, default=16, help="scan positions per side of a training tile")
    p.add_argument("--n-q", type=int, default=256, help="detector pixels per tile (0 = all)")
    p.add_argument("--checkpoint-every", type=positive_int, default=1, metavar="K", help="epochs between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from --out (weights, optimiser, epochs, history)")
    p.add_argument("--init", metavar="MODEL", default=None,
                   help="start from this checkpoint's architecture and weights ('default' or a shipped model's "
                        "name: general, paper-64), e.g. to fine-tune for other optics")
    p.add_argument("--dose-range", type=positive_float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="train on Poisson-noised tiles, N e⁻ per pattern drawn per tile log-uniformly in LO…HI "
                        "(simulated stores; recorded in the checkpoint)")
    p.add_argument("--noise-free-fraction", type=float, default=0.2, metavar="F",
                   help="with --dose-range: the fraction of tiles kept noise-free")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the model trains")
    p.add_argument("--loader-workers", type=nonnegative_int, default=0, metavar="N",
                   help="processes cutting tiles, from Zarr or (--in-memory) shared memory; 0 = in the training "
                        "process; a GPU needs several")
    p.add_argument("--in-memory", action="store_true",
                   help="read the collection into host memory once (needs its float32 size free); loader workers "
                        "share it")
    p.add_argument("--ddp", action="store_true", help="DistributedDataParallel under torchrun")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the tiles and the weights")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Train and report the last epoch."""
    import os

    if args.resume and args.overwrite:
        raise ValueError("give --resume (continue --out) or --overwrite (start again over it), not both")
    if args.resume:
        if not os.path.isfile(args.out):
            raise ValueError(f"--resume continues the checkpoint {args.out!r}, which does not exist: train without "
                             "--resume")
    else:  # before any data is read
        if os.path.lexists(args.out) and not args.overwrite:
            raise ValueError(f"{os.path.abspath(args.out)!r} already exists; pass --resume to continue it, "
                             "--overwrite to replace it, or choose another --out")
        check_output(args.out, overwrite=True)  # its folder must exist
    init = args.init
    if init == "default":
        init = default_model_path()
    elif init is not None:
        init = shipped_model(init)
    if args.dose_range and args.dose_range[0] > args.dose_range[1]:
        raise ValueError(f"--dose-range {args.dose_range[0]:g} {args.dose_range[1]:g}: give LO ≤ HI")
    if not 0 <= args.noise_free_fraction <= 1:
        raise ValueError(f"--noise-free-fraction must be in [0, 1], got {args.noise_free_fraction}")
    arch = {"name": {"dimensionless": "DimensionlessFlowModel", "dose-aware": "DoseAwareFlowModel",
                     "shared": "SharedFlowModel",
                     "paper": "FlowPredictorModel"}[args.architecture]}
    if args.hidden:
        arch["hidden"] = args.hidden
    if args.depth:
        if args.architecture == "paper":
            raise ValueError("--depth applies to --architecture dimensionless or shared only (the paper model has a "
                             "fixed depth)")
        arch["depth"] = args.depth
    cfg = TrainingConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, alpha=args.alpha, beta=args.beta,
                         gamma=args.gamma, tile=args.tile, n_q=args.n_q or None, steps_per_epoch=args.steps_per_epoch,
                         checkpoint_every=args.checkpoint_every, seed=args.seed, device=args.device,
                         loader_workers=args.loader_workers, lr_schedule=args.lr_schedule, init_from=init,
                         time_limit=args.time_limit, in_memory=args.in_memory,
                         architecture=arch, dose=args.dose_range, noise_free_fraction=args.noise_free_fraction)
    data = args.data if len(args.data) > 1 else args.data[0]
    # one trainer per checkpoint: the path is claimed for the whole run (by rank 0 only under torchrun, which
    # alone writes checkpoints); the data and the --init model are never written over
    import contextlib

    rank0 = int(os.environ.get("RANK", "0")) == 0
    claim = (claim_output(args.out, overwrite=True, inputs=[*args.data, init]) if rank0 else contextlib.nullcontext())
    with claim:
        result = train(data, args.out, cfg, resume=args.resume, progress=not args.no_progress, ddp=args.ddp,
                       log=lambda s: print(s, file=sys.stderr))
    last = result["history"][-1] if result["history"] else None
    print(f"wrote {args.out}" + (f" (validation loss {last['validation']['total']:.5g})" if last else ""))
    return 0

"""``flowtie-dask reconstruct STORE --out RESULT``: projected phase of a scan store."""

from __future__ import annotations

import argparse
import sys

from ..cluster import cluster_client
from ..pipeline import reconstruct_store
from ..results import write_result
from ..atomic import check_output, claim_output
from ..resume import reconstruction_record, resume_workspace
from .options import add_cluster_options, cluster_kwargs, nonnegative_int, pair, positive_int


def add_parser(sub) -> None:
    """Register the ``reconstruct`` sub-command."""
    p = sub.add_parser(
        "reconstruct", help="reconstruct the projected phase of a scan store",
        description=("Phase of every pattern (TIE over the scan per detector pixel, or gradient descent), exit "
                     "waves, and their projection onto the object, over scan tiles on Dask. Writes a Zarr group "
                     "with phase, amplitude, illumination and preview.png."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("store", metavar="STORE", help="scan store (*.zarr) from 'simulate' or 'import'")
    p.add_argument("--out", required=True, metavar="RESULT", help="output result folder (*.zarr)")
    p.add_argument("--method", choices=("tie", "flowtie", "gd"), default="tie",
                   help="tie: classical TIE (tiled, distributed); flowtie: the FlowTIE model (tiled, distributed); "
                        "gd: gradient descent on the far-field amplitudes with A = diag(O), a converged form of the "
                        "paper's baseline (whole scan in memory; the paper's dense A: benchmarks/reconstruct_table1.py "
                        "--methods gd-dense)")
    p.add_argument("--model", default=None, metavar="PATH",
                   help="FlowTIE checkpoint (default: the pretrained model shipped with the package); its optics "
                        "and sampling must match the scan's")
    p.add_argument("--symmetry", choices=("none", "mirror", "d4"), default="none",
                   help="--method flowtie: average the model over the specimen's mirrors (4× the model's time) or "
                        "all 8 symmetries of the square (8×); needs a probe without astigmatism")
    p.add_argument("--tile-size", type=positive_int, nargs="+", default=None, metavar="N",
                   help="scan positions per tile (one or two values); default: the whole scan when its data "
                        "are under 512 MiB, else 64×64 tiles (memory per worker follows the tile, not the scan)")
    p.add_argument("--halo", type=nonnegative_int, default=None, metavar="N",
                   help="scan positions read around each tile (default: 16; at most the scan's size)")
    p.add_argument("--periodic", choices=("auto", "yes", "no"), default="auto",
                   help="object = one scan period (auto: the store's 'periodic' attribute)")
    p.add_argument("--iterations", type=positive_int, default=100, help="gradient-descent iterations (--method gd)")
    p.add_argument("--initial", default=None, metavar="RESULT",
                   help="--method gd: start from the phase of an earlier result of this scan (e.g. a FlowTIE one; "
                        "10 iterations then reach what 100 reach from a flat start)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing result (by a rename once the new one is complete) and discard the "
                        "finished tiles of an interrupted run")
    p.add_argument("--keep-fields", action="store_true",
                   help="--method flowtie on several tiles: also keep each tile's predicted gradient field for "
                        "--resume (2/3 of the scan's size on disk beside the output, removed when the run ends); "
                        "without it a resumed FlowTIE run recomputes the fields and reuses finished projections")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run on this --out: tiles it finished (kept beside the output in "
                        ".RESULT.resume/) are loaded, not recomputed; refused if the store, method or parameters "
                        "differ")
    add_cluster_options(p, default_workers="0 = in-process threads")
    p.set_defaults(run=run)


def _model_file(args) -> str | None:
    if args.method != "flowtie":
        return None
    if args.model is not None:
        return args.model
    from ..model.checkpoint import default_model_path

    return default_model_path()


def run(args: argparse.Namespace) -> int:
    """Reconstruct and write the result."""
    inputs = [args.store, args.initial, args.model]
    check_output(args.out, overwrite=args.overwrite, inputs=inputs)  # fail before the work, not after
    periodic = {"auto": None, "yes": True, "no": False}[args.periodic]
    tile = "auto" if args.tile_size is None else pair(args.tile_size, option="--tile-size")
    device = "gpu" if args.gpus else "cpu"
    if args.symmetry != "none" and args.method != "flowtie":
        raise ValueError("--symmetry averages FlowTIE predictions: use it with --method flowtie")
    if args.keep_fields and args.method != "flowtie":
        raise ValueError("--keep-fields keeps FlowTIE's gradient fields: use it with --method flowtie")
    if args.model is not None and args.method != "flowtie":
        raise ValueError(f"--model is a FlowTIE checkpoint: use it with --method flowtie (--method {args.method} "
                         "has no model)")
    if args.initial is not None and args.method != "gd":
        raise ValueError("--initial is for --method gd (a starting object for gradient descent)")
    if args.method == "gd":
        if args.resume:
            raise ValueError("--resume continues tiled methods (tie, flowtie); --method gd runs the whole scan at once "
                             "and has nothing to resume")
        from ..baselines.gd import gd_reconstruct_store
        from ..results import open_result

        with claim_output(args.out, overwrite=args.overwrite, inputs=inputs):
            initial = open_result(args.initial) if args.initial is not None else None
            result = gd_reconstruct_store(args.store, iterations=args.iterations, periodic=periodic,
                                          device="cuda" if args.gpus else "cpu", progress=not args.no_progress,
                                          initial=initial)
            path = write_result(result, args.out, overwrite=args.overwrite)
    else:
        from ..store import open_scan_store

        st = open_scan_store(args.store)  # a bad store is named before anything is claimed or started
        if args.halo is not None and args.halo > max(st.scan_shape):
            raise ValueError(f"--halo {args.halo} is larger than the scan ({st.scan_shape[0]}×{st.scan_shape[1]} "
                             f"positions): use at most {max(st.scan_shape)} (the default 16 suits most scans)")
        args.halo = 16 if args.halo is None else args.halo
        model = _model_file(args)
        record = reconstruction_record(
            args.store, method=args.method, model=model,
            parameters={"tile_size": list(tile) if isinstance(tile, tuple) else tile, "halo": args.halo,
                        "periodic": args.periodic, "symmetry": args.symmetry, "device": device})
        workers = 0 if args.workers is None else args.workers
        with resume_workspace(args.out, record=record, resume=args.resume, overwrite=args.overwrite,
                              inputs=inputs) as cache:
            args.resume_note = (f"; finished tiles are kept in {cache}: rerun with --resume to continue")
            with cluster_client(**{**cluster_kwargs(args), "workers": workers},
                                announce=lambda s: print(s, file=sys.stderr)) as client:
                result = reconstruct_store(st, method=args.method, tile_size=tile, halo=args.halo,
                                           periodic=periodic, client=client, progress=not args.no_progress,
                                           device=device, model=args.model, symmetry=args.symmetry, cache=cache,
                                           keep_fields=args.keep_fields)
            path = write_result(result, args.out, overwrite=args.overwrite)
            args.resume_note, args.published = "", path
        if result.attrs.get("tiles_reused"):
            print(f"resumed: {result.attrs['tiles_reused']} finished tiles loaded, {result.attrs['tiles_computed']} "
                  "computed", file=sys.stderr)
        if result.attrs.get("data_repairs_summary"):
            print(f"note: {result.attrs['data_repairs_summary']}", file=sys.stderr)
    print(f"wrote {path} ({result.phase.shape[0]}×{result.phase.shape[1]} px of "
          f"{result.pixel_size[0]:.4f} Å, {result.attrs.get('seconds', 0):.2f} s); preview: {path}/preview.png")
    return 0

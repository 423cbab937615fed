"""``flowtie-dask reconstruct STORE --out RESULT``: projected phase of a scan store."""

from __future__ import annotations

import argparse
import os
import sys

from ..atomic import check_output, claim_output
from ..cluster import cluster_client
from ..methods import REGISTRY, all_options, get_method, method_help
from ..results import write_result
from ..resume import reconstruction_record, resume_workspace
from ..runner import reconstruct
from ..store import open_scan_store
from .options import add_cluster_options, cluster_kwargs, device_of, nonnegative_int, pair, positive_int


def add_parser(sub) -> None:
    """Register the ``reconstruct`` sub-command."""
    p = sub.add_parser(
        "reconstruct", help="reconstruct the projected phase of a scan store",
        description=("The projected phase by one of the registered methods (TIE, FlowTIE, iCoM, gradient descent), "
                     "over scan tiles on Dask. Writes a Zarr group with phase, amplitude, illumination and "
                     "preview.png."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("store", metavar="STORE", help="scan store (*.zarr) from 'simulate' or 'import'")
    p.add_argument("--out", required=True, metavar="RESULT", help="output result folder (*.zarr)")
    p.add_argument("--method", choices=tuple(REGISTRY), default="tie", help=method_help())
    p.add_argument("--tile-size", type=positive_int, nargs="+", default=None, metavar="N",
                   help="scan positions per tile (one or two values); default: the whole scan when its data "
                        "are under 512 MiB (a reduction such as icom: a tile per worker thread), else tiles whose "
                        "haloed block (the scans read × positions × detector pixels, float32) is within 1 GiB or a "
                        "quarter of a worker thread's memory, e.g. 64×64 at a 64×64 detector, 32×32 at 256×256 "
                        "(memory per worker follows the tile's bytes, not the scan or the detector; the note printed "
                        "says what was chosen and why; --resume keeps the choice of the run it resumes)")
    p.add_argument("--halo", type=nonnegative_int, default=None, metavar="N",
                   help="scan positions read around each tile (default: 16; at most the scan's size)")
    p.add_argument("--integration", choices=("auto", "tile", "global"), default="auto",
                   help="field methods (tie, flowtie) on several tiles: solve over the whole scan per block of "
                        "detector rows (global, exact: tiled = whole scan; auto does so) or within each haloed "
                        "tile (tile)")
    p.add_argument("--band-limit", choices=("auto", "on", "off"), default="auto",
                   help="low-pass the scans over the scan axes at 2α/λ, above which no pattern pixel holds signal, "
                        "only shot noise (auto: for FlowTIE on a scan with shot noise: counts or a noisy simulation)")
    p.add_argument("--scratch", default="auto", metavar="auto|memory|DIR",
                   help="global integration on several tiles: hand each tile's field to the blocks of detector rows "
                        "through files (worker memory follows the tile, not the scan; the files hold the data's size "
                        "during the run and are removed after it) in DIR, or in memory (the whole field, 2/3 of the "
                        "data, stays in the workers); auto: files beside the output when the field is over 256 MiB. "
                        "On a cluster of several machines DIR must be a folder every worker sees")
    p.add_argument("--periodic", choices=("auto", "yes", "no"), default="auto",
                   help="object = one scan period (auto: the store's 'periodic' attribute)")
    m = p.add_argument_group("method options (from the method registry)")
    for name, (opt, methods) in all_options().items():
        m.add_argument("--" + name.replace("_", "-"), dest=name, type=opt.type, choices=opt.choices,
                       default=argparse.SUPPRESS, metavar=opt.metavar,
                       help=f"--method {', '.join(methods)}: {opt.help}".replace("%", "%%"))  # argparse formats help
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


def _method(args):
    """The registered method with the options the user gave (an option the method does not take is refused)."""
    options = {name: getattr(args, name) for name in all_options() if getattr(args, name, None) is not None}
    return get_method(args.method, **options)


def _inputs(args) -> list:
    """The store and every option that names an input file (a model, a starting result)."""
    return [args.store, *(getattr(args, name, None) for name, (opt, _) in all_options().items() if opt.input_path)]


def run(args: argparse.Namespace) -> int:
    """Reconstruct and write the result."""
    inputs = _inputs(args)
    check_output(args.out, overwrite=args.overwrite, inputs=inputs)  # fail before the work, not after
    periodic = {"auto": None, "yes": True, "no": False}[args.periodic]
    tile = "auto" if args.tile_size is None else pair(args.tile_size, option="--tile-size")
    device = device_of(args)
    method = _method(args)
    if args.keep_fields and method.kind != "field":
        raise ValueError(f"--keep-fields keeps predicted gradient fields (--method flowtie); --method {args.method} "
                         "has none")
    st = open_scan_store(args.store)  # a bad store is named before anything is claimed or started
    if args.halo is not None and args.halo > max(st.scan_shape):
        raise ValueError(f"--halo {args.halo} is larger than the scan ({st.scan_shape[0]}×{st.scan_shape[1]} "
                         f"positions): use at most {max(st.scan_shape)} (the default 16 suits most scans)")
    halo = 16 if args.halo is None else args.halo
    scratch = {"auto": "auto", "memory": None}.get(args.scratch, args.scratch)
    if scratch not in ("auto", None) and not (os.path.isdir(scratch) and os.access(scratch, os.W_OK | os.X_OK)):
        raise ValueError(f"--scratch {scratch}: not a folder this user can write to; give an existing writable "
                         "folder (every worker must see it), or auto, or memory")
    workers = 0 if args.workers is None else args.workers
    if method.kind == "whole":
        if args.resume:
            raise ValueError(f"--resume continues tiled methods; --method {args.method} runs the whole scan at once "
                             "and has nothing to resume")
        workspace = claim_output(args.out, overwrite=args.overwrite, inputs=inputs)
    else:
        record = reconstruction_record(
            args.store, method=args.method, model=method.attrs().get("model"),
            parameters={"tile_size": list(tile) if isinstance(tile, tuple) else tile, "halo": halo,
                        "periodic": args.periodic, "device": device, "method": list(method.identity()),
                        "integration": args.integration, "band_limit": args.band_limit})
        workspace = resume_workspace(args.out, record=record, resume=args.resume, overwrite=args.overwrite,
                                     inputs=inputs)
    with workspace as cache:
        cache = None if method.kind == "whole" else cache
        if cache is not None:
            args.resume_note = f"; finished tiles are kept in {cache}: rerun with --resume to continue"
        with cluster_client(**{**cluster_kwargs(args), "workers": workers},
                            announce=lambda s: print(s, file=sys.stderr)) as client:
            result = reconstruct(st, method, tile_size=tile, halo=halo, periodic=periodic, client=client,
                                 progress=not args.no_progress, device=device, cache=cache,
                                 keep_fields=args.keep_fields, integration=args.integration,
                                 band_limit=args.band_limit, scratch=scratch)
        path = write_result(result, args.out, overwrite=args.overwrite)
        args.resume_note, args.published = "", path
    if result.attrs.get("tiles_reused"):
        print(f"resumed: {result.attrs['tiles_reused']} finished tiles loaded, {result.attrs['tiles_computed']} "
              "computed", file=sys.stderr)
    if result.attrs.get("tile_reason"):
        print(f"note: {result.attrs['tile_reason']}", file=sys.stderr)
    if result.attrs.get("integration_reason"):
        print(f"note: {result.attrs['integration_reason']}", file=sys.stderr)
    if result.attrs.get("assumed"):
        level, line = result.attrs["assumed"]
        print(f"{level}: {line}", file=sys.stderr)
    if result.attrs.get("data_repairs_summary"):
        print(f"note: {result.attrs['data_repairs_summary']}", file=sys.stderr)
    print(f"wrote {path} ({result.phase.shape[0]}×{result.phase.shape[1]} px of "
          f"{result.pixel_size[0]:.4f} Å, {result.attrs.get('seconds', 0):.2f} s); preview: {path}/preview.png")
    return 0

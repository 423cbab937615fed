"""``flowtie-dask simulate MATERIAL --out PATH``: simulate a 4D-STEM defocus series into a scan store."""

from __future__ import annotations

import argparse
import os
import sys
import time

from ..atomic import claim_output
from ..cluster import cluster_client
from ..simulate.collection import open_collection, simulate_collection
from ..simulate.series import SimulationParameters, simulate_to_store
from ..store import open_scan_store
from .options import (add_cluster_options, add_command, cluster_kwargs, device_of, pair, positive_float,
                      positive_int)


def add_parser(sub) -> None:
    """Register the ``simulate`` sub-command."""
    p = add_command(sub, "simulate", run, help="simulate a 4D-STEM defocus series of a crystal into a scan store",
                    defaults_in_help=True,
                    description="""
                        Multislice simulation of a 4D-STEM defocus series (Δf = −Δz, 0, +Δz; Δf = −C10, positive =
                        underfocus) of a periodic crystal supercell, written as a Zarr scan store with the
                        ground-truth projected phase. The scan covers the supercell once, so the data are periodic
                        over the scan.
                        """)
    p.add_argument("material", metavar="MATERIAL",
                   help="GaAs, SrTiO3, random-cubic or random-crystal (seeded by --seed; the latter with orthorhombic "
                        "cells, rotations about the beam, substitutions and vacancy columns), or a structure file ase reads (CIF, POSCAR …) "
                        "with an orthogonal cell, beam along z")
    p.add_argument("--out", required=True, metavar="PATH", help="output scan store folder (*.zarr)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing store at --out (by a rename once the new one is complete) and remove "
                        "what an interrupted run left")
    p.add_argument("--resume", action="store_true",
                   help="with --count: keep the structures an interrupted run with the same parameters finished")
    s = p.add_argument_group("specimen")
    s.add_argument("--lateral-cells", type=positive_int, nargs="+", default=[2], metavar="N",
                   help="unit cells along x and y (one value for both)")
    s.add_argument("--lateral-size", type=positive_float, default=None, metavar="Å",
                   help="instead of --lateral-cells: the number of cells closest to this width (training sets "
                        "of crystals with different lattice constants keep a similar sampling)")
    t = s.add_mutually_exclusive_group()
    t.add_argument("--thickness-cells", type=positive_int, default=None, metavar="N",
                   help="thickness in unit cells along the beam (default: 1)")
    t.add_argument("--thickness", type=positive_float, default=None, metavar="Å", help="thickness in Å")
    s.add_argument("--slice-thickness", type=positive_float, default=1.5, metavar="Å",
                   help="largest multislice slice thickness")
    s.add_argument("--frozen-phonons", type=positive_int, default=1, metavar="N",
                   help="frozen-phonon configurations averaged (1 = static lattice)")
    s.add_argument("--phonon-sigma", type=float, default=0.08, metavar="Å", help="RMS thermal displacement per axis")
    o = p.add_argument_group("optics")
    o.add_argument("--energy", type=positive_float, default=300e3, metavar="EV", help="beam energy in eV")
    o.add_argument("--semiangle", type=positive_float, default=20.0, metavar="MRAD", help="convergence semi-angle")
    o.add_argument("--defocus-step", type=positive_float, default=20.0, metavar="Å",
                   help="Δz of the series Δf = −Δz, 0, +Δz")
    o.add_argument("--cs", type=float, default=0.0, metavar="Å", help="spherical aberration C30 (1 mm = 1e7 Å)")
    o.add_argument("--aperture-edge", type=float, default=0.0, metavar="MRAD", help="soft aperture edge width")
    d = p.add_argument_group("sampling")
    d.add_argument("--scan-pixels", type=positive_int, nargs="+", default=[64], metavar="N",
                   help="scan positions along x and y over the supercell (one value for both)")
    d.add_argument("--scan-step", type=positive_float, nargs="+", default=None, metavar="Å",
                   help="instead of spreading --scan-pixels over the supercell: positions this far apart from (0, 0), "
                        "a window of the periodic supercell (not periodic over the scan unless it spans it)")
    d.add_argument("--detector-pixels", type=positive_int, nargs="+", default=[64], metavar="N",
                   help="detector pixels (centred crop of the simulation grid)")
    d.add_argument("--gpts", type=positive_int, nargs="+", default=None, metavar="N",
                   help="simulation grid over the supercell (default: the detector pixels)")
    d.add_argument("--chunk", type=positive_int, nargs="+", default=None, metavar="N",
                   help="scan positions per store chunk and Dask task (default: ~8 MiB chunks)")
    n = p.add_argument_group("noise and truth")
    n.add_argument("--dose", type=positive_float, default=None, metavar="E_PER_A2",
                   help="electron dose in e/Å² for Poisson noise (default: noise-free)")
    n.add_argument("--seed", type=int, default=0, help="seed of random-cubic, phonons and noise")
    n.add_argument("--probe-frame", action="store_true",
                   help="also store the probe-frame phase at focus (training truth; as large as one scan)")
    c = p.add_argument_group("training sets")
    c.add_argument("--count", type=positive_int, default=None, metavar="N",
                   help="simulate N structures (seeds SEED … SEED+N−1; use with random-cubic) into a collection "
                        "folder with collection.json, one Dask task per structure; implies --probe-frame")
    c.add_argument("--thickness-cells-range", type=positive_int, nargs=2, default=None, metavar=("LO", "HI"),
                   help="with --count: draw each structure's thickness in cells from LO…HI (seeded)")
    c.add_argument("--optics-range", default=None, metavar="FILE",
                   help="with --count: draw each structure's optics, thickness and sampling from the [low, high] "
                        "ranges in FILE (JSON/YAML; 'default' = those of the shipped model), seeded; the collection "
                        "records the ranges and each draw")
    add_cluster_options(p, default_workers="0 = in-process threads")


#: the SimulationParameters fields taken as parsed from the option of the same name, and those given as 1 or 2 values
_AS_GIVEN = ("material", "lateral_size", "thickness", "energy", "semiangle", "defocus_step", "cs", "aperture_edge",
             "slice_thickness", "dose", "frozen_phonons", "phonon_sigma", "seed", "probe_frame")
_PAIRS = ("lateral_cells", "detector_pixels", "gpts", "scan_pixels", "scan_step")


def run(args: argparse.Namespace) -> int:
    """Simulate and write the store, then print its summary."""
    params = SimulationParameters(
        **{name: getattr(args, name) for name in _AS_GIVEN},
        **{name: pair(getattr(args, name), option="--" + name.replace("_", "-")) for name in _PAIRS},
        thickness_cells=args.thickness_cells if args.thickness is not None or args.thickness_cells else 1,
        device=device_of(args),
    )
    if args.optics_range and not args.count:
        raise ValueError("--optics-range draws the optics of each structure of a collection: give --count N")
    if args.resume and not args.count:
        raise ValueError("--resume continues a collection (--count N); a single store is simulated in one pass")
    workers = 0 if args.workers is None else args.workers
    start = time.perf_counter()
    inputs = [args.material] if os.path.exists(args.material) else []
    if args.count:
        args.resume_note = "; finished structures are kept: rerun with --resume to continue"
        with cluster_client(**{**cluster_kwargs(args), "workers": workers},
                            announce=lambda s: print(s, file=sys.stderr)) as client:
            path = simulate_collection(params, args.out, count=args.count, client=client,
                                       thickness_cells_range=args.thickness_cells_range,
                                       progress=not args.no_progress, overwrite=args.overwrite,
                                       resume=args.resume, inputs=inputs, optics_range=args.optics_range)
        args.resume_note = ""
        if getattr(simulate_collection, "last_reused", 0):
            print(f"resumed: {simulate_collection.last_reused} finished structures kept, "
                  f"{args.count - simulate_collection.last_reused} simulated", file=sys.stderr)
    else:
        with claim_output(args.out, overwrite=args.overwrite, inputs=inputs), \
                cluster_client(**{**cluster_kwargs(args), "workers": workers},
                               announce=lambda s: print(s, file=sys.stderr)) as client:
            path = simulate_to_store(params, args.out, chunks=pair(args.chunk, option="--chunk"), client=client,
                                     progress=not args.no_progress, overwrite=args.overwrite)
    print(f"wrote {path} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if args.count:
        members = open_collection(path)
        print(f"collection {path}: {len(members)} scan stores")
        print(open_scan_store(members[0]).describe())
    else:
        print(open_scan_store(path).describe())
    return 0

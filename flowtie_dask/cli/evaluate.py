"""``flowtie-dask evaluate RESULT... --truth STORE``: phase MSE against the truth and a Figure-3 panel."""

from __future__ import annotations

import argparse

from ..atomic import atomic_path, check_output
from ..evaluate import check_truth_matches, evaluate_result, figure_panel
from ..results import open_result
from ..store import open_scan_store


def add_parser(sub) -> None:
    """Register the ``evaluate`` sub-command."""
    p = sub.add_parser(
        "evaluate", help="phase MSE of results against a simulated store's truth",
        description=("Resamples the truth onto each result's grid and prints the phase MSE (rad²), blind to a "
                     "global phase offset, 2π wraps and a whole-pixel shift; writes a panel truth | results."))
    p.add_argument("results", nargs="+", metavar="RESULT", help="result folders from 'reconstruct'")
    p.add_argument("--truth", required=True, metavar="STORE", help="scan store with a truth/ group")
    p.add_argument("--figure", default=None, metavar="PNG",
                   help="panel to write (default: evaluation.png beside the first result); an existing file "
                        "is refused unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --figure")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print one line per result and write the panel.

    Everything is checked before anything is printed or written: the figure path (refused when it exists,
    unless ``--overwrite``), every result, the truth store, and that the truth is of each result's scan.
    """
    import os

    out = args.figure or os.path.join(os.path.dirname(os.path.abspath(args.results[0])), "evaluation.png")
    if os.path.lexists(out) and not args.overwrite:
        raise ValueError(f"{os.path.abspath(out)!r} already exists; choose another --figure or pass --overwrite")
    check_output(out, overwrite=True, inputs=[args.truth, *args.results], option="--figure")  # folder exists; no input
    truth_store = open_scan_store(args.truth)
    results = [(path, open_result(path)) for path in args.results]
    for path, res in results:
        try:
            check_truth_matches(res, truth_store)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    rows, panels, truth = [], {}, None
    for path, res in results:
        ev = evaluate_result(res, truth_store)
        method = res.attrs.get("method", "?")
        rows.append(f"{path:40s} {method:8s} {ev['mse']:12.5f} {ev['truth_variance']:10.5f} {str(ev['shift']):>8s}")
        if truth is None:
            truth = ev["truth_on_grid"]
            panels["truth"] = truth - truth.mean()
        if ev["truth_on_grid"].shape == truth.shape:
            panels[f"{method} (MSE {ev['mse']:.4f})"] = ev["aligned"] - ev["truth_on_grid"].mean()
    with atomic_path(out, overwrite=args.overwrite, inputs=[args.truth, *args.results]) as tmp:
        figure_panel(panels, tmp, title=os.path.basename(os.path.abspath(args.truth)))
    print(f"{'result':40s} {'method':8s} {'MSE (rad²)':>12s} {'truth var':>10s} {'shift':>8s}")
    for row in rows:
        print(row)
    print(f"panel: {out}")
    return 0

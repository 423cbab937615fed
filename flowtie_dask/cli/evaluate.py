"""``flowtie-dask evaluate RESULT... --truth STORE``: phase MSE against the truth and a Figure-3 panel."""

from __future__ import annotations

import argparse

from ..evaluate import evaluate_result, figure_panel
from ..results import open_result


def add_parser(sub) -> None:
    """Register the ``evaluate`` sub-command."""
    p = sub.add_parser(
        "evaluate", help="phase MSE of results against a simulated store's truth",
        description=("Resamples the truth onto each result's grid and prints the phase MSE (rad²), blind to a "
                     "global phase offset, 2π wraps and a whole-pixel shift; writes a panel truth | results."))
    p.add_argument("results", nargs="+", metavar="RESULT", help="result folders from 'reconstruct'")
    p.add_argument("--truth", required=True, metavar="STORE", help="scan store with a truth/ group")
    p.add_argument("--figure", default=None, metavar="PNG",
                   help="panel to write (default: evaluation.png beside the first result)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print one line per result and write the panel."""
    import os

    panels, truth = {}, None
    print(f"{'result':40s} {'method':8s} {'MSE (rad²)':>12s} {'truth var':>10s} {'shift':>8s}")
    for path in args.results:
        res = open_result(path)
        ev = evaluate_result(res, args.truth)
        method = res.attrs.get("method", "?")
        print(f"{path:40s} {method:8s} {ev['mse']:12.5f} {ev['truth_variance']:10.5f} {str(ev['shift']):>8s}")
        if truth is None:
            truth = ev["truth_on_grid"]
            panels["truth"] = truth - truth.mean()
        if ev["truth_on_grid"].shape == truth.shape:
            panels[f"{method} (MSE {ev['mse']:.4f})"] = ev["aligned"] - ev["truth_on_grid"].mean()
    out = args.figure or os.path.join(os.path.dirname(os.path.abspath(args.results[0])), "evaluation.png")
    figure_panel(panels, out, title=os.path.basename(os.path.abspath(args.truth)))
    print(f"panel: {out}")
    return 0

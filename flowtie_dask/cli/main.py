"""Entry point of the ``flowtie-dask`` command: sub-command registry and error handling."""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from . import evaluate, export, import_, info, reconstruct, simulate, train

COMMANDS = (simulate, import_, train, reconstruct, evaluate, export, info)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (one sub-parser per command module)."""
    parser = argparse.ArgumentParser(
        prog="flowtie-dask",
        description="FlowTIE phase reconstruction from 4D-STEM defocus series, on Zarr and Dask.",
    )
    parser.add_argument("--version", action="version", version=f"flowtie-dask {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("flowtie-dask: interrupted; no output was written", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as exc:  # ScanStoreError, ClusterError, bad files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"flowtie-dask {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Entry point of the ``flowtie-dask`` command: sub-command registry and error handling.

Every refusal is one line on stderr, ``flowtie-dask COMMAND: error: …``, and exit status 2; an interrupt
(Ctrl-C) exits 130 and SIGTERM (what a batch system's time limit sends) exits 143, both after the
command's clean-up has run (partial outputs removed, resumable work kept).
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys

from .. import __version__
from . import calibrate, evaluate, export, import_, info, rechunk, reconstruct, simulate, train

COMMANDS = (simulate, import_, calibrate, rechunk, train, reconstruct, evaluate, export, info)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that the same clean-up as for Ctrl-C runs."""


def _on_sigterm(signum, frame):
    _quiet_shutdown()
    raise Terminated()


def _on_sigint(signum, frame):
    _quiet_shutdown()
    raise KeyboardInterrupt()


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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _quiet_shutdown() -> None:
    """After an interrupt, silence the loggers of Dask's shutting-down cluster (no tracebacks after our line)."""
    import logging
    import warnings

    for name in ("distributed", "tornado", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    warnings.filterwarnings("ignore")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 2 bad input, 130 interrupted, 143 terminated)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = {}
    try:
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm),
                    signal.SIGINT: signal.signal(signal.SIGINT, _on_sigint)}
    except ValueError:  # not the main thread (e.g. called from a test's thread)
        previous = {}
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt as exc:
        _quiet_shutdown()
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        done = getattr(args, "published", None)
        state = f"{done} was already written" if done else "no output was written"
        print(f"flowtie-dask {args.command}: {what}; {state}" + getattr(args, "resume_note", ""), file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except MemoryError as exc:
        detail = f" ({_one_line(exc)})" if str(exc) else ""
        print(f"flowtie-dask {args.command}: error: out of memory{detail}: use smaller tiles (--tile-size), a "
              "smaller --halo, fewer threads per worker, or a machine with more memory", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            where = f" writing {exc.filename!r}" if exc.filename else ""
            print(f"flowtie-dask {args.command}: error: the disk is full{where}; nothing was published: free space "
                  "or choose another --out", file=sys.stderr)
        else:
            print(f"flowtie-dask {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as exc:  # ScanStoreError, ClusterError, bad files
        print(f"flowtie-dask {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

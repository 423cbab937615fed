"""The bad-input harness: every refusal is exit 2, one line naming the problem, inputs unchanged, and no output
that looks valid.

``assert_refused(argv, match=..., inputs=[...], outputs=[...])`` runs the command in-process (or in a
subprocess with ``subprocess=True``), and checks

* the exit code is 2;
* stderr is exactly one line, starts with ``flowtie-dask`` and contains ``match`` (a regular expression);
* every path in ``inputs`` has the same content checksum as before (files and folders, recursively);
* no path in ``outputs`` exists afterwards, unless it existed before with the same checksum, and no hidden
  ``.NAME.partial-*`` sibling of an output is left behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess as sp
import sys

__all__ = ["tree_checksum", "assert_refused"]


def tree_checksum(path) -> str | None:
    """SHA-256 over the relative names and bytes of every file under ``path`` (None when it is absent)."""
    path = os.fspath(path)
    if not os.path.lexists(path):
        return None
    h = hashlib.sha256()
    if os.path.isfile(path):
        with open(path, "rb") as f:
            h.update(f.read())
        return h.hexdigest()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            h.update(os.path.relpath(full, path).encode())
            with open(full, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def _partials(out: str) -> list[str]:
    parent, base = os.path.split(os.path.abspath(out))
    if not os.path.isdir(parent):
        return []
    return [n for n in os.listdir(parent) if n.startswith(f".{base}.partial-")]


def assert_refused(argv, *, match: str, inputs=(), outputs=(), capsys=None, subprocess: bool = False,
                   env: dict | None = None, timeout: float = 300) -> str:
    """Run ``flowtie-dask *argv`` and assert a clean refusal (see the module docstring).

    Returns
    -------
    str
        The one line printed on stderr.
    """
    argv = [os.fspath(a) for a in argv]
    before_in = {os.fspath(p): tree_checksum(p) for p in inputs}
    before_out = {os.fspath(p): tree_checksum(p) for p in outputs}
    if subprocess:
        r = sp.run([sys.executable, "-m", "flowtie_dask.cli.main", *argv], capture_output=True, text=True,
                   env={**os.environ, "CUPY_PYLOPS": "0", **(env or {})}, timeout=timeout)
        code, err = r.returncode, r.stderr
    else:
        from flowtie_dask.cli.main import main

        assert capsys is not None, "pass capsys for in-process runs"
        capsys.readouterr()
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
        err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, f"exit {code}, expected 2; stderr:\n{err}"
    # argparse prints its usage before its one error line; the error line is what names the problem
    if lines and lines[0].startswith("usage:"):
        lines = [line for line in lines if not line.startswith(("usage:", " "))]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith("flowtie-dask"), line
    assert re.search(match, line), f"{match!r} not in {line!r}"
    log = os.environ.get("FLOWTIE_CATALOGUE_LOG")
    if log:  # the note's catalogue: one (test, message) line per refusal
        with open(log, "a") as f:
            f.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '?').split(' ')[0]}\t{line}\n")
    for p, h in before_in.items():
        assert tree_checksum(p) == h, f"input {p} was modified"
    for p, h in before_out.items():
        after = tree_checksum(p)
        assert after == h, f"output {p} was {'written' if h is None else 'changed'}"
        assert not _partials(p), f"partial output left beside {p}: {_partials(p)}"
    return line

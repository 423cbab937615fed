"""Outputs that appear only when complete: build in a hidden sibling, rename into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from typing import Iterator

__all__ = ["OutputExistsError", "atomic_path", "check_output"]


class OutputExistsError(ValueError):
    """The output exists and overwriting was not asked for."""


def check_output(path: str | os.PathLike, *, overwrite: bool = False) -> str:
    """Refuse an output path that exists (unless ``overwrite``) or whose folder is missing.

    Returns
    -------
    str
        The absolute path.

    Raises
    ------
    OutputExistsError, ValueError
        One line naming the path and what to do.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError(f"{path!r} already exists; choose another --out or pass --overwrite")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise ValueError(f"the folder {parent!r} for the output does not exist")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary sibling path to write; rename it to ``path`` when the block succeeds.

    On an exception the temporary output is deleted and an existing ``path`` is left untouched.

    Parameters
    ----------
    path : str or PathLike
        Final file or folder.
    overwrite : bool
        Replace an existing ``path`` (only once the new output is complete).

    Yields
    ------
    str
        Temporary path (same folder, hidden name, same extension).
    """
    path = check_output(path, overwrite=overwrite)
    parent, base = os.path.dirname(path), os.path.basename(path)
    tmp = os.path.join(parent, f".{base}.partial-{uuid.uuid4().hex[:8]}{os.path.splitext(base)[1]}")
    try:
        yield tmp
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)

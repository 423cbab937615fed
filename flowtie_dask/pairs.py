"""Per-axis values given as one or two numbers: :func:`pair` reads them as a pair (one value serves both axes).

Scan steps, detector samplings, pixel sizes, tile sizes and scan-position counts are given along two axes
(Rx, Ry or Qx, Qy); a single number, or a sequence of one, means the same value along both. :func:`pair` is
the one place that reads such values, so every caller refuses the same inputs with a message naming the
parameter (the command line adds its flag in :func:`flowtie_dask.cli.options.pair`).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import numpy as np

__all__ = ["pair"]


def _is_scalar(value) -> bool:
    try:
        return np.ndim(value) == 0
    except ValueError:  # a ragged sequence
        return False


def pair(
    value: Any,
    *,
    name: str,
    convert: Callable[[Any], Any] | None = float,
    finite: bool = False,
    what: str = "numbers",
    error: type[Exception] = ValueError,
) -> tuple[Any, Any]:
    """A scalar, or a sequence of one or two values, as a pair ``(a, b)`` (one value serves both).

    Parameters
    ----------
    value : number or sequence of one or two numbers
    name : str
        The parameter's name, used in the error message (``"tile_size must be one or two numbers, got …"``).
    convert : callable or None
        Applied to each value (default :class:`float`; :class:`int` for counts). None keeps the values as
        given; they must then be real numbers (not bools).
    finite : bool
        Also refuse NaN and ±inf.
    what : str
        What the values are, in the message (default ``"numbers"``).
    error : exception class
        Raised instead of :class:`ValueError` (a subclass of it, such as
        :class:`flowtie_dask.store.ScanStoreError`).

    Returns
    -------
    (a, b) : tuple

    Raises
    ------
    ValueError (or ``error``)
        Naming ``name`` when there are no or more than two values, a value is not a number (nested
        sequences included), or, with ``finite``, a value is not finite.
    """
    if _is_scalar(value):
        values = [value, value]
    else:
        try:
            values = list(value)
        except TypeError:
            raise error(f"{name} must be one or two {what}, got {value!r}") from None
        if len(values) == 1:
            values = values * 2
    if len(values) != 2 or not all(_is_scalar(v) for v in values):
        raise error(f"{name} must be one or two {what}, got {value!r}")
    if convert is None:
        if not all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in values):
            raise error(f"{name} must be one or two {what}, got {value!r}")
        out = tuple(values)
    else:
        try:
            out = tuple(convert(v) for v in values)
        except (TypeError, ValueError, OverflowError):
            raise error(f"{name} must be one or two {what}, got {value!r}") from None
    if finite and not all(math.isfinite(v) for v in out):
        raise error(f"{name} must be one or two finite {what}, got {value!r}")
    return out

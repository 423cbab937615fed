"""Reconstruction methods and their registry.

``get_method("tie")`` builds a method by name with its options; :data:`REGISTRY` maps every name to its
class. The CLI's ``--method`` choices and help, the result attributes and the Table 1 benchmark come from
the registry, so adding a method is one module here (a :class:`~flowtie_dask.methods.base.Method`
subclass decorated with :func:`register`) plus its tests.
"""

from __future__ import annotations

import inspect

from ..backend import require_memory
from .base import KINDS, Method, Needs, Option

__all__ = ["KINDS", "Method", "Needs", "Option", "REGISTRY", "all_options", "get_method", "method_help", "methods_for",
           "register"]

#: name → Method subclass, in registration order.
REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a method to :data:`REGISTRY` under ``cls.name``."""
    if not cls.name or cls.kind not in KINDS:
        raise TypeError(f"{cls.__name__} needs a name and a kind in {KINDS}")
    REGISTRY[cls.name] = cls
    return cls


def get_method(name: str, **options) -> Method:
    """The method ``name`` built with ``options`` (keyword-only constructor arguments).

    Raises
    ------
    ValueError
        For an unknown name (listing the known ones) or an option the method does not take.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}: use one of {', '.join(REGISTRY)}")
    cls = REGISTRY[name]
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    for key in options:
        if key not in known:
            flag = "--" + key.replace("_", "-")
            raise ValueError(f"method {name!r} takes no option {key!r} ({flag}); its options: "
                             f"{', '.join(sorted(known)) or 'none'}")
    return cls(**options)


def all_options() -> dict[str, tuple[Option, list[str]]]:
    """Every option of the registered methods: name → (the option, the methods that take it).

    Raises
    ------
    TypeError
        Two methods declare the same option name with different types or choices.
    """
    out: dict[str, tuple[Option, list[str]]] = {}
    for name, cls in REGISTRY.items():
        for opt in cls.options:
            if opt.name in out:
                first = out[opt.name][0]
                if (first.type, first.choices) != (opt.type, opt.choices):
                    raise TypeError(f"option {opt.name!r} of {name!r} differs from the one of {out[opt.name][1]}")
                out[opt.name][1].append(name)
            else:
                out[opt.name] = (opt, [name])
    return out


def method_help() -> str:
    """One help line per registered method, for ``--method``."""
    return "; ".join(f"{name}: {cls.summary}" for name, cls in REGISTRY.items())


def methods_for(geometry) -> dict[str, str | None]:
    """Which registered methods (with their default options) can reconstruct a scan of this geometry.

    Parameters
    ----------
    geometry : ReconstructionGeometry

    Returns
    -------
    dict
        name → None when the method accepts the scan, else the first line of its refusal.
    """
    out: dict[str, str | None] = {}
    for name, cls in REGISTRY.items():
        try:
            method = cls()
            method.check(geometry)
            require_memory(method.needs(geometry).memory, what="the whole scan at once", instead="crop the scan")
            out[name] = None
        except (ValueError, RuntimeError, OSError) as exc:
            out[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return out


def _register_modules() -> None:
    """Import every module of this package: each registers its methods (a new method is one new file).
    The classic methods come first, in this order (the order of ``--method``); any others follow by name."""
    import importlib
    import pkgutil

    first = ("tie", "flowtie", "icom", "gd")
    found = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_") and m.name != "base")
    for name in [*first, *(n for n in found if n not in first)]:
        importlib.import_module(f"{__name__}.{name}")


_register_modules()

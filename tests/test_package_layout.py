"""The package's shape (DESIGN §7): layers import only downwards (kernels → store/results → methods → runner →
CLI), the per-tile kernels and the methods touch no Dask, Zarr or store, no module is over 400 lines, and
in-package imports sit at module top unless the imported module pulls a heavy optional package
(torch, CuPy, py4DSTEM, dask-cuda)."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "flowtie_dask"
HEAVY = {"torch", "cupy", "py4DSTEM", "dask_cuda"}
#: layer of each top-level part of the package; everything not named here is below the methods (layer 0)
LAYERS = {"methods": 1, "runner": 2, "cli": 3}
#: kernels: pure array code (no dask, zarr, distributed, and not the store or results modules); of the methods,
#: flowtie and gd are left out: they read their own inputs (a model, a starting result) when they are built
KERNELS = ["backend", "geometry", "integrate", "pairs", "projection", "reconstruct", "tie", "physics",
           "baselines", "methods.base", "methods.tie", "methods.icom", "model.fields", "model.inference"]
IO = {"dask", "zarr", "distributed", "flowtie_dask.store", "flowtie_dask.results"}


def _modules():
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def _imports(name):
    """(target module, imported names, at module top?) of every import in a module of the package."""
    path, is_pkg = MODULES[name]
    tree = ast.parse(path.read_text())
    package = name.split(".") if is_pkg else name.split(".")[:-1]
    # module top: the module's body, and the bodies of its top-level if/try blocks (TYPE_CHECKING, fallbacks)
    top = set()
    for node in tree.body:
        top.add(id(node))
        if isinstance(node, (ast.If, ast.Try)):
            top.update(id(n) for part in ("body", "orelse", "finalbody") for n in getattr(node, part, []))
            for handler in getattr(node, "handlers", []):
                top.update(id(n) for n in handler.body)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, [a.name for a in node.names], id(node) in top))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], id(node) in top) for a in node.names]
    return found


def _resolve(target, names):
    """The package modules an import reaches (``from pkg import mod`` reaches ``pkg.mod``)."""
    if target not in MODULES:
        return []
    return [target] + [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]


def _layer(name):
    parts = name.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def test_no_module_imports_a_layer_above_it():
    wrong = []
    for name in MODULES:
        for target, names, _ in _imports(name):
            for mod in _resolve(target, names):
                if _layer(mod) > _layer(name) and mod != "flowtie_dask":
                    wrong.append(f"{name} imports {mod}")
    assert not wrong, "; ".join(wrong)


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernels_and_methods_touch_no_dask_zarr_or_store(kernel):
    names = [m for m in MODULES if m == f"flowtie_dask.{kernel}" or m.startswith(f"flowtie_dask.{kernel}.")]
    assert names, kernel
    for name in names:
        for target, _, _ in _imports(name):
            assert not any(target == io or target.startswith(io + ".") for io in IO), f"{name} imports {target}"


def test_no_module_is_over_400_lines():
    long = {name: n for name, (path, _) in MODULES.items() if (n := len(path.read_text().splitlines())) > 400}
    assert not long, long


def _heavy(name, seen=None):
    """Does importing this package module import a heavy optional package (at module top, transitively)?"""
    seen = set() if seen is None else seen
    if name in seen:
        return False
    seen.add(name)
    parents = [".".join(name.split(".")[:i]) for i in range(2, len(name.split(".")))]
    for mod in [name] + [p for p in parents if p in MODULES]:
        for target, names, at_top in _imports(mod):
            if not at_top:
                continue
            if target.split(".")[0] in HEAVY:
                return True
            if any(_heavy(m, seen) for m in _resolve(target, names)):
                return True
    return False


def test_in_package_imports_are_at_module_top_unless_they_pull_a_heavy_package():
    lazy = []
    for name in MODULES:
        for target, names, at_top in _imports(name):
            reached = _resolve(target, names)
            if not at_top and reached and reached != ["flowtie_dask"] and not any(_heavy(m) for m in reached):
                lazy.append(f"{name}: {target} {names}")
    assert not lazy, "; ".join(lazy)

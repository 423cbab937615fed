"""The estimators are pure array code (the brief of the package and DESIGN §7): centre, rotation, drift and
virtual import no dask, zarr, distributed or store; only reading and calibration touch the store."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2] / "flowtie_dask" / "calibrate"
IO = ("dask", "zarr", "distributed")


def _targets(module):
    tree = ast.parse((ROOT / f"{module}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield ("." * node.level) + (node.module or "")
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


@pytest.mark.parametrize("module", ["centre", "rotation", "drift", "virtual"])
def test_estimators_touch_no_dask_zarr_or_store(module):
    for target in _targets(module):
        assert not target.startswith(IO), (module, target)
        assert "store" not in target and "results" not in target, (module, target)


def test_only_reading_and_calibration_read_the_store():
    readers = {p.stem for p in ROOT.glob("*.py") if any("store" in t for t in _targets(p.stem))}
    assert readers == {"reading", "calibration"}, readers

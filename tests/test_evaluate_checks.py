"""evaluate judges a result only against the truth of its own scan: another field of view, other optics or
another specimen is refused with one line naming the result's source."""

import dataclasses
import shutil

import pytest

from flowtie_dask.evaluate import check_truth_matches, evaluate_result
from flowtie_dask.methods import get_method
from flowtie_dask.runner import reconstruct
from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store
from flowtie_dask.store import open_scan_store

SMALL = dict(material="GaAs", scan_pixels=6, detector_pixels=16, gpts=24)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("truths")
    one = simulate_to_store(SimulationParameters(lateral_cells=1, **SMALL), str(root / "one.zarr"), progress=False)
    # the same optics and scan step over a 2×2 supercell: another field of view
    two = simulate_to_store(SimulationParameters(lateral_cells=2, **{**SMALL, "scan_pixels": 12}),
                            str(root / "two.zarr"), progress=False)
    thick = simulate_to_store(SimulationParameters(lateral_cells=1, thickness_cells=2, **SMALL),
                              str(root / "thick.zarr"), progress=False)
    return {"one": one, "two": two, "thick": thick, "root": root}


@pytest.fixture(scope="module")
def result(stores):
    return reconstruct(stores["one"], get_method("tie"), progress=False, halo=4)


def test_its_own_truth_is_accepted(stores, result):
    check_truth_matches(result, stores["one"])
    ev = evaluate_result(result, stores["one"])
    assert 0 < ev["mse"] < ev["truth_variance"]


def test_a_truth_of_another_field_of_view_is_refused(stores, result):
    one = open_scan_store(stores["one"])
    assert one.metadata.scan_step == pytest.approx(open_scan_store(stores["two"]).metadata.scan_step)
    with pytest.raises(ValueError, match=r"two.zarr' is not the truth of this result: the truth covers 11.3 × 11.3 Å, "
                                         r"the result 5.7 × 5.7 Å: give the store the result was reconstructed from "
                                         r"\(its source is '.*one.zarr'\)") as info:
        evaluate_result(result, stores["two"])
    assert "\n" not in str(info.value)
    # the other way round too, and for a non-periodic reconstruction (scan plus one probe window)
    big = reconstruct(stores["two"], get_method("tie"), progress=False, periodic=False, halo=4)
    with pytest.raises(ValueError, match=r"the truth store's scan gives a non-periodic object of .* Å, the result "
                                         r".* Å: give the store the result was reconstructed from"):
        evaluate_result(big, stores["one"])
    evaluate_result(big, stores["two"])  # its own truth is fine


def test_other_optics_are_refused(stores, result):
    other = dataclasses.replace(result, attrs={**result.attrs, "scan_metadata": {
        **result.attrs["scan_metadata"], "energy_eV": 200e3}})
    with pytest.raises(ValueError, match=r"its energy is 3e\+05 eV, the result's scan had 2e\+05 eV"):
        check_truth_matches(other, stores["one"])
    shaped = dataclasses.replace(result, attrs={**result.attrs, "scan_shape": [8, 8]})
    with pytest.raises(ValueError, match=r"its scan shape is \[6, 6\] positions, the result's scan had \[8, 8\]"):
        check_truth_matches(shaped, stores["one"])


def test_another_specimen_with_the_same_field_of_view_is_refused(stores, result):
    with pytest.raises(ValueError, match=r"thick.zarr' is not the truth of this result: its specimen has thickness_A = "
                                         r"11.31, the result's source '.*one.zarr' has 5.653"):
        evaluate_result(result, stores["thick"])
    # a copy of the source store (same specimen, another path) is accepted
    copy = stores["root"] / "copy.zarr"
    shutil.copytree(stores["one"], copy)
    assert evaluate_result(result, str(copy))["mse"] == pytest.approx(evaluate_result(result, stores["one"])["mse"])


def test_a_result_whose_source_is_gone_is_still_checked_by_field_of_view(stores, result):
    gone = dataclasses.replace(result, attrs={**result.attrs, "source": "/nonexistent/one.zarr"})
    check_truth_matches(gone, stores["one"])
    with pytest.raises(ValueError, match=r"the truth covers 11.3 × 11.3 Å.*its source is '/nonexistent/one.zarr'"):
        check_truth_matches(gone, stores["two"])
    bare = dataclasses.replace(result, attrs={})  # nothing recorded: the field of view alone
    with pytest.raises(ValueError, match=r"the result 5.7 × 5.7 Å: give the store the result was reconstructed "
                                         r"from$"):
        check_truth_matches(bare, stores["two"])

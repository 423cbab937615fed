"""flowtie_dask.pairs.pair: one or two numbers as a pair, and the CLI and library callers that share it."""

import math

import numpy as np
import pytest

from flowtie_dask.cli.options import pair as option_pair
from flowtie_dask.pairs import pair
from flowtie_dask.store import ScanStoreError


@pytest.mark.parametrize("value,expected", [
    (3, (3.0, 3.0)),
    (2.5, (2.5, 2.5)),
    (np.float32(0.5), (0.5, 0.5)),
    (np.array(4), (4.0, 4.0)),
    ([7], (7.0, 7.0)),
    ((7,), (7.0, 7.0)),
    ([1, 2], (1.0, 2.0)),
    ((1.5, -2), (1.5, -2.0)),
    (np.array([3, 4]), (3.0, 4.0)),
])
def test_scalars_and_one_or_two_values(value, expected):
    out = pair(value, name="scan_step")
    assert out == expected
    assert isinstance(out, tuple) and all(type(v) is float for v in out)


def test_convert_int_and_keep():
    assert pair([3, 5], name="tile_size", convert=int) == (3, 5)
    assert pair(4, name="tile_size", convert=int) == (4, 4)
    out = pair([np.int64(3)], name="tile_size", convert=None)
    assert out == (3, 3) and all(type(v) is np.int64 for v in out)


@pytest.mark.parametrize("value", [[1, 2, 3], (1.0, 2.0, 3.0, 4.0), np.zeros(3), []])
def test_no_or_more_than_two_values_are_refused_naming_the_parameter(value):
    with pytest.raises(ValueError, match=r"^tile_size must be one or two numbers, got "):
        pair(value, name="tile_size")


@pytest.mark.parametrize("value", ["x", None, {"a": 1}, [1, "a"], [[1, 2]], [[1], [2]], [1, [2, 3]], object()])
def test_non_numbers_are_refused(value):
    with pytest.raises(ValueError, match=r"^detector_center must be one or two numbers, got "):
        pair(value, name="detector_center")


@pytest.mark.parametrize("value", ["3", True, [1, "2"], None])
def test_without_conversion_only_real_numbers_pass(value):
    with pytest.raises(ValueError, match="tile_size must be one or two numbers"):
        pair(value, name="tile_size", convert=None)


@pytest.mark.parametrize("value", [math.nan, [1.0, math.inf], (-math.inf, 0)])
def test_finite(value):
    assert len(pair(value, name="origin_A")) == 2
    with pytest.raises(ValueError, match=r"^origin_A must be one or two finite numbers, got "):
        pair(value, name="origin_A", finite=True)


def test_error_class_and_noun():
    with pytest.raises(ScanStoreError, match="scan_step must be one or two numbers"):
        pair([1, 2, 3], name="scan_step", error=ScanStoreError)
    with pytest.raises(ValueError, match="chunks must be one or two scan-position counts"):
        pair("x", name="chunks", what="scan-position counts")


def test_the_cli_helper_names_the_flag():
    assert option_pair(None, option="--tile-size") is None
    assert option_pair([4], option="--tile-size") == (4, 4)
    assert option_pair([4, 6], option="--tile-size") == (4, 6)
    with pytest.raises(ValueError) as err:
        option_pair([3, 5, 7], option="--tile-size")
    assert str(err.value) == "--tile-size takes one or two values (along Rx and Ry), got 3: 3 5 7"


def test_library_callers_share_it():
    from flowtie_dask.simulate.series import SimulationParameters
    from flowtie_dask.store import ScanMetadata

    p = SimulationParameters(lateral_cells=[3], detector_pixels=(8, 16), scan_pixels=4)
    assert (p.lateral_cells, p.detector_pixels, p.gpts, p.scan_pixels) == ((3, 3), (8, 16), (8, 16), (4, 4))
    with pytest.raises(ValueError, match="scan_pixels must be one or two numbers"):
        SimulationParameters(scan_pixels=(4, 4, 4))
    m = ScanMetadata(energy=300e3, semiangle=20.0, defocus=(-20, 0, 20), scan_step=[0.2],
                     detector_sampling=(0.08, 0.09), detector_center=4)
    assert (m.scan_step, m.detector_sampling, m.detector_center) == ((0.2, 0.2), (0.08, 0.09), (4.0, 4.0))
    with pytest.raises(ScanStoreError, match="detector_sampling must be one or two numbers"):
        m.replace(detector_sampling=(0.1, 0.1, 0.1))

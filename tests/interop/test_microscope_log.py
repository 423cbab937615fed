"""The microscope log (JSON/YAML with units) read into the store's units, and its refusals."""

import json
import math

import pytest

from flowtie_dask.interop.microscope_log import parse_microscope_log, read_microscope_log
from flowtie_dask.physics.constants import wavelength

BASE = {"high_tension_kV": 300.0, "convergence_semiangle_mrad": 20.0, "defocus_nm_nominal": [-2.0, 0.0, 2.0],
        "defocus_sign": "positive = underfocus", "scan_shape": [40, 40], "scan_step_nm_nominal": 0.01697,
        "detector_mrad_per_pixel": 1.8125, "detector_binning": 2, "files": {"focus": "scan_focus.h5"}}


def test_a_log_is_converted_to_the_stores_units(tmp_path):
    path = tmp_path / "log.json"
    path.write_text(json.dumps(BASE))
    log = read_microscope_log(str(path))
    assert log.energy == 300e3 and log.semiangle == 20.0
    assert log.defocus == pytest.approx((-20.0, 0.0, 20.0)) and log.scan_shape == (40, 40)
    assert log.scan_step == pytest.approx((0.1697, 0.1697))
    # an angle per pixel θ is a sampling θ/λ: 1.8125 mrad at 300 kV (λ = 0.019687 Å) is 0.09207 1/Å
    assert log.detector_sampling == pytest.approx((1.8125e-3 / wavelength(300e3),) * 2)
    assert log.detector_sampling[0] == pytest.approx(0.092066, rel=1e-4)
    assert log.detector_binning == 2 and log.extra == {"files": {"focus": "scan_focus.h5"}}


@pytest.mark.parametrize("form", [
    {"high_tension": "300 kV"}, {"energy": {"value": 300000, "unit": "eV"}}, {"beam_energy_keV": 300},
    {"accelerating_voltage_MV": 0.3}, {"high_tension_V": 3e5},
])
def test_every_way_of_writing_a_quantity_gives_the_same_value(form):
    data = {k: v for k, v in BASE.items() if k != "high_tension_kV"} | form
    assert parse_microscope_log(data).energy == pytest.approx(300e3)


def test_units_of_length_angle_and_sampling_and_the_defocus_sign():
    data = {k: v for k, v in BASE.items() if not k.startswith(("defocus", "scan_step", "detector_mrad"))}
    log = parse_microscope_log(data | {"defocus": "20, 0, -20 A", "defocus_sign": "positive = overfocus",
                                       "scan_step_pm": [16.97, 20.0], "detector_sampling": "0.9 1/nm"})
    assert log.defocus == (-20.0, -0.0, 20.0)  # overfocus-positive values negated to Δf = −C10
    assert log.scan_step == pytest.approx((0.1697, 0.2)) and log.detector_sampling == pytest.approx((0.09, 0.09))
    deg = parse_microscope_log(data | {"defocus_angstrom": [-20, 0, 20], "defocus_sign": "positive = underfocus",
                                       "convergence_semiangle_deg": 180 / math.pi * 0.02})
    assert deg.semiangle == pytest.approx(20.0) and deg.scan_step is None and deg.detector_sampling is None
    inverse = parse_microscope_log(data | {"defocus_A": [-20, 0, 20], "defocus_sign": "positive = underfocus",
                                           "detector_sampling": "0.9 nm^-1"})
    assert inverse.detector_sampling == pytest.approx((0.09, 0.09))


def test_yaml_logs_are_read(tmp_path):
    path = tmp_path / "log.yaml"
    path.write_text("high_tension: 200 kV\nconvergence_semiangle_mrad: 25\ndefocus_nm: [-3, 0, 3]\n"
                    "defocus_sign: positive = underfocus\n")
    log = read_microscope_log(str(path))
    assert (log.energy, log.semiangle, log.defocus) == (200e3, 25.0, (-30.0, 0.0, 30.0))


@pytest.mark.parametrize("change, message", [
    ({"high_tension_kV": None}, r"no energy \(give one of high_tension_<unit>, energy_<unit>"),
    ({"high_tension_kV": 3.0}, r"beam energy 3 kV is outside 10 kV–1.5 MV; check the unit"),
    ({"convergence_semiangle_mrad": None, "convergence_semiangle": 20}, r"convergence_semiangle has no unit"),
    ({"convergence_semiangle_mrad": None, "semiangle": "20 furlongs"}, r"semiangle has the unit 'furlongs'"),
    ({"defocus_nm_nominal": [0, 0, 2]}, r"three defocus values must differ"),
    ({"defocus_nm_nominal": [0, 2]}, r"defocus_nm_nominal needs 3 value\(s\), got 2"),
    ({"defocus_sign": None}, r"say which sign the defocus values have"),
    ({"defocus_sign": "up"}, r"defocus_sign 'up' is neither"),
    ({"scan_shape": [40, 0]}, r"scan_shape must be two positive whole numbers"),
    ({"scan_step_nm_nominal": 17}, r"scan step \(170.0, 170.0\) Å is outside"),
    ({"detector_sampling": "0.09 1/A"}, r"angle per pixel or its sampling, not both"),
    ({"high_tension_kV": "300 kV"}, r"high_tension_kV says kV in its name"),  # agrees: accepted below
    ({"high_tension_kV": True}, r"high_tension_kV must be a number"),
    ({"high_tension_kV": float("nan")}, r"non-finite"),
])
def test_bad_logs_are_refused_in_one_line_naming_the_key(change, message):
    data = {k: v for k, v in BASE.items()}
    for k, v in change.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    if change == {"high_tension_kV": "300 kV"}:
        assert parse_microscope_log(data).energy == 300e3  # the same unit twice is not a conflict
        data["high_tension_kV"] = "300 V"
        message = r"high_tension_kV says kV in its name and V in its value"
    with pytest.raises(ValueError, match=message) as err:
        parse_microscope_log(data, source="log.json")
    assert "\n" not in str(err.value) and str(err.value).startswith("log.json: ")


def test_unreadable_files_are_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad.json' is not valid JSON"):
        read_microscope_log(str(bad))
    with pytest.raises(ValueError, match=r"cannot read the microscope log .*missing.json"):
        read_microscope_log(str(tmp_path / "missing.json"))
    lst = tmp_path / "list.json"
    lst.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"expected a mapping of names to values at the top, got list"):
        read_microscope_log(str(lst))


def test_the_shared_experiment_like_log_is_read():
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[3] / "shared/data/experiment_like/si_300kV/microscope.json"
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    log = read_microscope_log(str(path))
    # its README: 300 kV, 20 mrad, defocus −20, 0, +20 Å (positive = underfocus), 40×40 positions of 0.1697 Å
    assert (log.energy, log.semiangle, log.defocus, log.scan_shape) == (300e3, 20.0, (-20.0, 0.0, 20.0), (40, 40))
    assert log.scan_step == pytest.approx((0.1697, 0.1697))

"""Reconstruction honours the detector metadata: a transposed, rotated or off-centre detector recorded as
such in the store reconstructs like the plain one."""

import numpy as np
import pytest

from flowtie_dask.methods import get_method
from flowtie_dask.runner import reconstruct
from flowtie_dask.simulate.series import SimulationParameters, simulate_to_store
from flowtie_dask.store import open_scan_store, write_scan_store


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    path = tmp_path_factory.mktemp("det") / "plain.zarr"
    return simulate_to_store(SimulationParameters(material="SrTiO3", lateral_cells=2, scan_pixels=24,
                                                  detector_pixels=24, gpts=32), str(path), progress=False)


def _rewrite(src, dst, transform, **meta):
    st = open_scan_store(src)
    data = transform(st.intensity[:])
    with write_scan_store(dst, st.metadata.replace(**meta), scan_shape=st.scan_shape,
                          detector_shape=data.shape[-2:]) as g:
        g["intensity"][:] = data
    return dst


def _same(a, b):
    d = np.angle(np.exp(1j * (a.phase - b.phase)))
    return float(np.mean((d - d.mean()) ** 2))


@pytest.mark.parametrize(
    "name,transform,meta",
    [
        # recorded = transpose(true): py4DSTEM QR_flip
        ("transposed", lambda x: np.swapaxes(x, -1, -2), dict(detector_transpose=True)),
        # recorded content rotated by −90°: undone by a +90° rotation (q_scan = R(90°) q_det)
        ("rotated", lambda x: np.rot90(x, k=-1, axes=(-2, -1)), dict(detector_rotation=90.0)),
    ],
)
def test_orientation_metadata_is_honoured(plain, tmp_path, name, transform, meta):
    ref = reconstruct(plain, get_method("tie"), progress=False)
    var = np.var(ref.phase)
    moved = _rewrite(plain, str(tmp_path / f"{name}.zarr"), transform, **meta)
    if name == "rotated":  # a quarter-turn moves the centre pixel of an even detector by one
        st = open_scan_store(moved)
        assert st.metadata.detector_center == (12.0, 12.0)
    res = reconstruct(moved, get_method("tie"), progress=False)
    assert _same(res, ref) < 1e-2 * var  # a quarter-turn of an even detector moves its edge row: 0.2 %
    # ignoring the metadata gives a visibly different (wrong) reconstruction
    wrong = _rewrite(plain, str(tmp_path / f"{name}_ignored.zarr"), transform)
    assert _same(reconstruct(wrong, get_method("tie"), progress=False), ref) > 0.05 * var


def test_bright_field_offset_is_honoured(plain, tmp_path):
    ref = reconstruct(plain, get_method("tie"), progress=False)
    var = np.var(ref.phase)
    # the unscattered beam lands one pixel further along Qx: zero frequency at pixel 13 instead of 12
    shifted = _rewrite(plain, str(tmp_path / "off.zarr"), lambda x: np.roll(x, 1, axis=-2), detector_center=(13.0, 12.0))
    res = reconstruct(shifted, get_method("tie"), progress=False)
    assert _same(res, ref) < 0.05 * var
    ignored = _rewrite(plain, str(tmp_path / "off_ignored.zarr"), lambda x: np.roll(x, 1, axis=-2))
    assert _same(reconstruct(ignored, get_method("tie"), progress=False), ref) > 4 * _same(res, ref)

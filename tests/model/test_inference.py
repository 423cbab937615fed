"""FlowTIE inference: averaging the prediction over the specimen's mirrors (``symmetry=``), in the full form and
the fast one (``dark_field_bin``; its own tests are in test_fast_inference.py)."""

import dataclasses

import numpy as np
import pytest
import torch

from flowtie_dask.geometry import ReconstructionGeometry
from flowtie_dask.model.architectures import FlowPredictorModel
from flowtie_dask.model.checkpoint import save_checkpoint
from flowtie_dask.model.inference import SYMMETRIES, FlowTIEPhase, _from_frame, _to_frame

pytestmark = pytest.mark.usefixtures("torch_one_thread")

NON_IDENTITY = SYMMETRIES["d4"][1:]


def equivariant(x, q):
    """A stand-in model that is exactly equivariant: periodic forward differences of the data plus q."""
    ux = torch.roll(x, -1, dims=-2) - x + q[:, 0, None, None]
    uy = torch.roll(x, -1, dims=-1) - x + q[:, 1, None, None]
    return torch.stack([ux, uy], 1)


@pytest.mark.parametrize("element", NON_IDENTITY)
def test_each_frame_maps_an_equivariant_field_back_to_itself(element):
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.random((1, 5, 7, 9)))
    q = torch.from_numpy(rng.normal(size=(5, 2)))
    want = equivariant(x, q)
    xt, qt = _to_frame(x, q, element)
    got = _from_frame(equivariant(xt, qt), element)
    assert got.shape == want.shape
    known = ~torch.isnan(got)
    swap, fx, fy = element
    along_x, along_y = (7, 9) if swap else (9, 7)  # the frame's x axis is the original y axis after a swap
    assert int((~known).sum()) == (fx * along_x + fy * along_y) * 5  # a flipped axis's edge difference is unknown
    torch.testing.assert_close(got[known], want[known])
    # another element's inverse does not undo this one (the check can fail)
    other = next(e for e in NON_IDENTITY if e != element)
    wrong = _from_frame(equivariant(xt, qt), other) if (swap == other[0]) else None
    if wrong is not None:
        both = known & ~torch.isnan(wrong)
        assert not torch.allclose(wrong[both], want[both])


def geometry(n_scan=10, centre=31.5):
    """The shipped model's optics (paper-64 preset), 64×64 detector centred between pixels so that
    reversing a detector axis is exactly q → −q."""
    return ReconstructionGeometry(energy=300e3, semiangle=20.0, aperture_edge=0.0, focus_c10=0.0, aberrations={},
                                  scan_shape=(n_scan, n_scan), scan_step=(0.1767, 0.1767), detector_shape=(64, 64),
                                  detector_sampling=(1 / (64 * 0.1767),) * 2, detector_center=(centre, centre),
                                  periodic=True, c10=(20.0, 0.0, -20.0))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(2)
    i = rng.random((3, 10, 10, 64, 64)).astype(np.float32) + 0.5
    return i / i.sum(axis=(-2, -1), keepdims=True)


def mirror_x(g):
    """What the field of the x-mirrored experiment must be, from the field g (2, hx, hy, Qx, Qy)."""
    gx = -np.roll(g[0][::-1, :, ::-1, :], -1, axis=0)
    gy = g[1][::-1, :, ::-1, :]
    return np.stack([gx, gy])


def transpose(g):
    return np.stack([g[1], g[0]]).transpose(0, 2, 1, 4, 3)


@pytest.mark.parametrize("dark_field_bin", [1, 4])
@pytest.mark.parametrize("symmetry", ["mirror", "d4"])
def test_the_averaged_prediction_is_exactly_equivariant_and_the_plain_one_is_not(data, symmetry, dark_field_bin):
    """Mirroring the data (scan axis and detector axis) mirrors the averaged field; the plain model is
    only approximately equivariant, so it fails the same check by far more. In the fast form too: the
    super-pixels (bounded between pixels, the detector centred between pixels) map onto each other."""
    geo = geometry()

    def error(method, transform, mirrored):
        _, g = method.field(data, geo)
        _, gm = method.field(np.ascontiguousarray(mirrored), geo)
        want = transform(np.asarray(g))
        inner = (slice(None), slice(0, -1))  # the last forward difference along x has no mirror image
        return float(np.abs(np.asarray(gm)[inner] - want[inner]).max() / np.abs(want[inner]).max())

    cases = [(mirror_x, data[:, ::-1, :, ::-1, :])]
    if symmetry == "d4":
        cases.append((transpose, data.transpose(0, 2, 1, 4, 3)))
    sym = FlowTIEPhase("paper-64", symmetry=symmetry, dark_field_bin=dark_field_bin)
    plain = FlowTIEPhase("paper-64", dark_field_bin=dark_field_bin)
    for transform, mirrored in cases:
        e_sym = error(sym, transform, mirrored)
        e_plain = error(plain, transform, mirrored)
        assert e_sym < 1e-4, (transform.__name__, e_sym)
        assert e_plain > 100 * e_sym, (transform.__name__, e_plain, e_sym)


def test_symmetry_refuses_what_it_cannot_average(tmp_path):
    with pytest.raises(ValueError, match="unknown symmetry 'c6'"):
        FlowTIEPhase(symmetry="c6")
    method = FlowTIEPhase("paper-64", symmetry="d4")
    with pytest.raises(ValueError, match="without astigmatism"):
        method.check(dataclasses.replace(geometry(), aberrations={"C12": 5.0, "phi12": 0.0}))
    with pytest.raises(ValueError, match="equal scan steps.*'mirror'"):
        method.check(dataclasses.replace(geometry(), scan_step=(0.1767, 0.17)))
    FlowTIEPhase("paper-64", symmetry="mirror").check(dataclasses.replace(geometry(), scan_step=(0.1767, 0.17)))
    path = save_checkpoint(str(tmp_path / "paper.pt"), model=FlowPredictorModel(16, hidden=4), meta={})
    with pytest.raises(ValueError, match="needs a model that takes each pixel's q"):
        FlowTIEPhase(path, symmetry="mirror")


@pytest.mark.parametrize("dark_field_bin", [1, 4])
def test_a_constant_offset_in_the_field_leaves_a_non_periodic_phase_unchanged(monkeypatch, dark_field_bin):
    """Both integration paths (within a tile, FlowTIEPhase.__call__; over the whole scan, the runner's stage 2)
    remove each pixel's mean field before a mirror integration: a field offset by a constant per pixel gives the
    same phase up to a constant per pixel; a periodic integration is not touched."""
    from tests.conftest import weak_object_series
    from flowtie_dask.methods.base import Method

    inten, _, _, geo = weak_object_series(n=32, step=0.18, scan_step=0.18, max_phase=0.5, seed=2)
    data = np.ascontiguousarray(inten[:, :10, :12])
    geo = dataclasses.replace(geo, scan_shape=(10, 12), periodic=False)
    phase = FlowTIEPhase("paper-64", dark_field_bin=dark_field_bin)
    i0, g = phase.field(data, geo)
    offset = np.random.default_rng(0).normal(scale=0.2, size=(2, 1, 1) + g.shape[3:]).astype(np.float32)
    _, plain = phase(data, geo, boundary="mirror")
    monkeypatch.setattr(FlowTIEPhase, "field", lambda self, d, gm: (i0, g + offset))
    monkeypatch.setattr(FlowTIEPhase, "fast", property(lambda self: False))
    _, shifted = phase(data, geo, boundary="mirror")
    d = shifted - plain
    np.testing.assert_allclose(d - d.mean(axis=(0, 1)), 0, atol=2e-4)
    def stage2(f, boundary):  # the runner's stage 2 of a field method with the default (gradient) integration
        return Method().integrate(f, geo, boundary=boundary, row0=0, rows=(0, f.shape[3]))

    whole = [stage2(f, "mirror") for f in (g, g + offset)]
    d = whole[1] - whole[0]
    np.testing.assert_allclose(d - d.mean(axis=(0, 1)), 0, atol=2e-4)
    periodic = [stage2(f, "periodic") for f in (g, g + offset)]
    d = periodic[1] - periodic[0]  # a periodic integration ignores the mean by itself
    np.testing.assert_allclose(d - d.mean(axis=(0, 1)), 0, atol=2e-4)

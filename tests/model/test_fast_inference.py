"""The fast form of FlowTIE inference (``dark_field_bin``): the model on the bright-field pixels one by one and
on b×b super-pixels of the dark field, each member pixel given its super-pixel's field."""

import dataclasses

import numpy as np
import pytest
import torch

from flowtie_dask.backend import to_torch
from flowtie_dask.geometry import ReconstructionGeometry
from flowtie_dask.methods import get_method
from flowtie_dask.model.architectures import SharedFlowModel
from flowtie_dask.model.checkpoint import save_checkpoint
from flowtie_dask.model.dimensionless import DimensionlessFlowModel, DoseAwareFlowModel
from flowtie_dask.model.inference import FlowTIEPhase
from flowtie_dask.model.superpixels import DEFAULT_DARK_FIELD_BIN, pixel_groups
from flowtie_dask.tie import defocus_derivative
from tests.conftest import weak_object_series

pytestmark = pytest.mark.usefixtures("torch_one_thread")

STEP = 0.1767  # Å: the paper-64 preset's scan step and 1/(64·STEP) its detector sampling


def geometry(n_det=64, centre=32.0, n_scan=8):
    return ReconstructionGeometry(energy=300e3, semiangle=20.0, aperture_edge=0.0, focus_c10=0.0, aberrations={},
                                  scan_shape=(n_scan, n_scan), scan_step=(STEP, STEP), detector_shape=(n_det, n_det),
                                  detector_sampling=(1 / (64 * STEP),) * 2, detector_center=(centre, centre),
                                  periodic=True, c10=(20.0, 0.0, -20.0))


def reference_groups(geo, b, margin):
    """Slow per-pixel grouping: {key: [flat pixel indices]} with key ("bf", p) or ("block", bx, by)."""
    qx, qy = geo.q_vectors(np)
    k = geo.semiangle * 1e-3 / geo.wavelength
    (nx, ny), (cx, cy) = geo.detector_shape, geo.detector_center
    groups = {}
    for i in range(nx):
        for j in range(ny):
            p = i * ny + j
            if b == 1 or np.hypot(qx[i], qy[j]) <= (1 + margin) * k:
                key = ("bf", p)
            else:
                key = ("block", int(np.floor((i - cx) / b + 0.5)), int(np.floor((j - cy) / b + 0.5)))
            groups.setdefault(key, []).append(p)
    return groups


@pytest.mark.parametrize("b, margin, centre", [(4, 0.25, 32.0), (3, 0.0, 31.5), (8, 0.1, 31.5), (1, 0.25, 32.0)])
def test_pixel_groups_equal_a_per_pixel_reference(b, margin, centre):
    geo = geometry(centre=centre)
    ref = reference_groups(geo, b, margin)
    grp = pixel_groups(geo, b, margin)
    assert grp.count.size == len(ref) and grp.labels.shape == (64 * 64,)
    qx, qy = geo.q_vectors(np)
    dq = geo.detector_sampling
    for key, members in ref.items():
        g = grp.labels[members[0]]
        assert set(np.flatnonzero(grp.labels == g)) == set(members), key  # exactly these pixels
        assert grp.count[g] == len(members)
        ii, jj = np.divmod(np.array(members), 64)
        np.testing.assert_allclose(grp.q[g], [qx[ii].mean(), qy[jj].mean()], atol=1e-12)
        np.testing.assert_allclose(grp.size[g], [(np.ptp(ii) + 1) * dq[0], (np.ptp(jj) + 1) * dq[1]])
        assert (g < grp.n_bright) == (key[0] == "bf")  # the bright-field pixels come first
    if b > 1:
        assert grp.count.max() == b * b and grp.n_bright < 64 * 64 / 4
    else:
        assert grp.n_bright == 64 * 64 and (grp.labels == np.arange(64 * 64)).all()


def test_the_partition_is_symmetric_when_no_block_edge_falls_on_a_pixel():
    """Centre between pixels, even b: q → −q (pixel i → 2c − i) maps every group onto a group."""
    grp = pixel_groups(geometry(centre=31.5), 4, 0.25)
    lab = grp.labels.reshape(64, 64)
    for flipped in (lab[::-1], lab[:, ::-1], lab.T):
        pairs = set(zip(lab.ravel(), flipped.ravel()))
        assert len(pairs) == grp.count.size  # a bijection between groups
    lab32 = pixel_groups(geometry(centre=32.0), 4, 0.25).labels.reshape(64, 64)[1:, 1:]  # about pixel 32
    assert len(set(zip(lab32.ravel(), lab32[::-1].ravel()))) > grp.count.size  # edges on pixel centres: not


def test_pixel_groups_refuse_bad_parameters():
    with pytest.raises(ValueError, match="dark_field_bin"):
        pixel_groups(geometry(), 0)
    with pytest.raises(ValueError, match="margin"):
        pixel_groups(geometry(), 2, -0.1)
    with pytest.raises(ValueError, match="dark_field_bin"):
        FlowTIEPhase("paper-64", dark_field_bin=2.5)
    with pytest.raises(ValueError, match="bright_field_margin"):
        get_method("flowtie", model="paper-64", bright_field_margin=-1.0)


@pytest.fixture(scope="module")
def random_data():
    rng = np.random.default_rng(3)
    i = rng.random((3, 6, 7, 64, 64)).astype(np.float32) + 0.1
    return i / i.sum(axis=(-2, -1), keepdims=True)


def full_reference(model, data, geo, **kwargs):
    """The full form as it was written before the fast one: the model on every pixel, then rad/Å."""
    didz, i0 = defocus_derivative(data, geo.c10)
    hx, hy, nqx, nqy = i0.shape

    def pixels_first(a):
        return to_torch(np.ascontiguousarray(np.moveaxis(a.reshape(hx, hy, -1), -1, 0)[None].astype(np.float32)))

    qx, qy = geo.q_vectors(np)
    q = torch.from_numpy(np.stack(np.meshgrid(qx, qy, indexing="ij"), -1).reshape(-1, 2).astype(np.float32))
    with torch.no_grad():
        u = model(pixels_first(didz), pixels_first(i0), q, pixel_chunk=256, **kwargs)[0].numpy()
    return np.stack([np.moveaxis(u[c], 0, -1).reshape(hx, hy, nqx, nqy) / geo.scan_step[c] for c in (0, 1)])


def test_dark_field_bin_1_is_bit_identical_to_the_full_form(random_data):
    geo = geometry()
    method = get_method("flowtie", model="paper-64", dark_field_bin=1)
    model, _ = method._phase._model("cpu")
    i0, g = method.field(random_data, geo)
    want = full_reference(model, random_data, geo)
    assert g.shape == want.shape == (2, 6, 7, 64, 64) and g.dtype == want.dtype == np.float32
    assert np.array_equal(g, want) and np.array_equal(i0, random_data[1])
    _, fast = get_method("flowtie", model="paper-64", dark_field_bin=4).field(random_data, geo)
    assert not np.allclose(fast, want, rtol=1e-3, atol=0)  # the fast form is another computation


@pytest.mark.parametrize("name, options", [("flowtie", {"dark_field_bin": 4}), ("flowtie", {"dark_field_bin": 1}),
                                           ("tie", {})])
def test_the_field_of_the_interior_is_the_tiles_field_there(random_data, name, options):
    """Asked for the interior only (the runner's field stage), a method returns exactly those positions of the
    field it makes for the whole haloed tile."""
    geo = geometry()
    method = get_method(name, **options)
    interior = (slice(1, 5), slice(2, 6))
    _, whole = method.field(random_data, geo)
    _, part = method.field(random_data, geo, interior=interior)
    assert part.shape == (2, 4, 4, 64, 64)
    assert np.array_equal(part, whole[:, 1:5, 2:6])


def expanded_reference(model, data, geo, b, margin, optics=None, sizes=True, electrons=None, counted=True):
    """The model run on all P pixels of data in which every pixel holds its group's mean didz, i0 and q
    (built pixel by pixel from :func:`reference_groups`): the super-pixels' members are then identical
    pixels, so the detector-mixing context weighs each group by its member count, as the fast form must."""
    didz, i0 = defocus_derivative(data, geo.c10)
    hx, hy = i0.shape[:2]
    didz, i0 = didz.reshape(hx, hy, -1).astype(np.float64), i0.reshape(hx, hy, -1).astype(np.float64)
    qx, qy = geo.q_vectors(np)
    q = np.stack(np.meshgrid(qx, qy, indexing="ij"), -1).reshape(-1, 2)
    d_e, i_e, q_e, size = np.empty_like(didz), np.empty_like(i0), np.empty_like(q), np.empty_like(q)
    members_of = np.empty(q.shape[0])
    for members in reference_groups(geo, b, margin).values():
        ii, jj = np.divmod(np.array(members), 64)
        for p in members:
            d_e[..., p], i_e[..., p] = didz[..., members].mean(-1), i0[..., members].mean(-1)
            q_e[p] = q[members].mean(0)
            size[p] = (np.ptp(ii) + 1) * geo.detector_sampling[0], (np.ptp(jj) + 1) * geo.detector_sampling[1]
            members_of[p] = len(members)
    t = [torch.from_numpy(np.moveaxis(a, -1, 0)[None].astype(np.float32).copy()) for a in (d_e, i_e)]
    kwargs = {} if optics is None else {"optics": dict(optics)}
    if optics is not None and sizes:
        kwargs["optics"].update(pixel_x=torch.from_numpy(size[:, 0].astype(np.float32)),
                                pixel_y=torch.from_numpy(size[:, 1].astype(np.float32)))
    if electrons is not None:  # a group's mean over m pixels counts m times a pixel's electrons
        kwargs["optics"]["electrons"] = torch.from_numpy(electrons * (members_of if counted else np.ones_like(members_of))).float()
    with torch.no_grad():
        u = model(*t, torch.from_numpy(q_e.astype(np.float32)), **kwargs)[0].numpy()
    return np.stack([np.moveaxis(u[c], 0, -1).reshape(hx, hy, 64, 64) / geo.scan_step[c] for c in (0, 1)])


@pytest.mark.parametrize("kind", ["shared", "dimensionless", "dose-aware"])
def test_each_member_gets_its_super_pixels_field(random_data, tmp_path, kind):
    """The fast form equals the full model on group-averaged data (a slow per-pixel reference), for a model
    without optics inputs, one that takes each super-pixel's size as pixel_x/pixel_y, and one that takes its
    electrons (m members: m times a pixel's)."""
    from flowtie_dask.model.optics_groups import optics_inputs

    torch.manual_seed(0)
    model = {"shared": SharedFlowModel, "dimensionless": DimensionlessFlowModel,
             "dose-aware": DoseAwareFlowModel}[kind](hidden=8, depth=3)
    with torch.no_grad():  # a model whose output depends on the pixel size (weight of input 9, Δq/k)
        model.stem.weight.mul_(20.0)
    geo = geometry()
    electrons = None
    if kind == "dose-aware":
        electrons = 300.0  # e⁻ per pattern (0.07 per pixel here): a 4×4 super-pixel is far less noisy than a pixel
        geo = dataclasses.replace(geo, electrons_per_pattern=electrons)
    path = save_checkpoint(str(tmp_path / "m.pt"), model=model, meta={})
    phase = FlowTIEPhase(path, dark_field_bin=4, margin=0.1, pixel_chunk=100)
    model, _ = phase._model("cpu")
    _, got = phase.field(random_data, geo)
    optics = optics_inputs(geo) if kind != "shared" else None
    want = expanded_reference(model, random_data, geo, 4, 0.1, optics, electrons=electrons)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.abs(want).max())
    # the members of a super-pixel share one field, which is not the field of the first member alone
    grp = pixel_groups(geo, 4, 0.1)
    members = np.flatnonzero(grp.labels == grp.n_bright)
    flat = got.reshape(2, 6, 7, -1)
    assert len(members) > 1 and (flat[..., members] == flat[..., members[:1]]).all()
    phase.dark_field_bin = 1
    _, per_pixel = phase.field(random_data, geo)
    assert not np.allclose(per_pixel.reshape(2, 6, 7, -1)[..., members], flat[..., members], rtol=1e-2)
    if kind != "shared":  # the super-pixel's size reaches the model: with the pixel's own size it differs
        wrong = expanded_reference(model, random_data, geo, 4, 0.1, optics, sizes=False,
                                   electrons=electrons).reshape(2, 6, 7, -1)
        assert not np.allclose(wrong[..., members], flat[..., members], rtol=1e-2)
    if kind == "dose-aware":  # … and so do its electrons: with one pixel's count it differs
        wrong = expanded_reference(model, random_data, geo, 4, 0.1, optics, electrons=electrons,
                                   counted=False).reshape(2, 6, 7, -1)
        assert not np.allclose(wrong[..., members], flat[..., members], rtol=1e-3)


@pytest.fixture(scope="module")
def weak_object():
    """A weak phase object at the paper-64 optics (64×64 detector, 0.0884 1/Å), scanned at 2·0.1767 Å."""
    inten, _, _, geo = weak_object_series(n=64, step=STEP, scan_step=2 * STEP, max_phase=0.5, seed=4)
    return np.ascontiguousarray(inten[:, :12, :12]), dataclasses.replace(geo, scan_shape=(12, 12))


@pytest.fixture(scope="module")
def full_field(weak_object):
    data, geo = weak_object
    return FlowTIEPhase("paper-64", dark_field_bin=1).field(data, geo)


@pytest.mark.parametrize("margin", [0.0, 0.25])
def test_fast_form_equals_the_full_form_on_the_bright_field(weak_object, full_field, margin):
    """paper-64 on simulated data: within the aperture the fast form's field is the full form's to 1 %
    (intensity-weighted rms; measured 0.3 %: the super-pixels change only the detector-mixing context there);
    in the dark field it is another, coarser field."""
    data, geo = weak_object
    i0, g1 = full_field
    _, g4 = FlowTIEPhase("paper-64", dark_field_bin=4, margin=margin).field(data, geo)
    qx, qy = geo.q_vectors(np)
    q = np.hypot(qx[:, None], qy[None])
    aperture = geo.semiangle * 1e-3 / geo.wavelength

    def rel(mask):
        w = i0[None][..., mask]
        return float(np.sqrt((w * (g4 - g1)[..., mask] ** 2).sum() / (w * g1[..., mask] ** 2).sum()))

    bf, df = rel(q <= aperture), rel(q > 1.25 * aperture)
    assert bf < 1e-2, bf
    assert df > 10 * bf, (bf, df)


def test_the_cli_options_reach_the_method():
    from flowtie_dask.cli.main import build_parser
    from flowtie_dask.cli.reconstruct import _method

    def method(*extra):
        return _method(build_parser().parse_args(["reconstruct", "s.zarr", "--out", "r.zarr", *extra]))

    m = method("--method", "flowtie", "--model", "paper-64", "--dark-field-bin", "2", "--bright-field-margin", "0.1")
    assert (m.dark_field_bin, m.bright_field_margin) == (2, 0.1)
    assert (m._phase.dark_field_bin, m._phase.margin) == (2, 0.1)
    assert m.attrs()["dark_field_bin"] == 2 and m.identity() != method("--method", "flowtie", "--model",
                                                                        "paper-64").identity()
    assert method("--method", "flowtie", "--model", "paper-64").dark_field_bin == DEFAULT_DARK_FIELD_BIN
    with pytest.raises(ValueError, match="method 'tie' takes no option 'dark_field_bin' \\(--dark-field-bin\\)"):
        method("--dark-field-bin", "4")


def test_a_model_tied_to_its_detector_runs_the_full_form(tmp_path):
    """The paper's FlowPredictorModel takes all pixels as channels: no super-pixels for it, whatever the bin."""
    from flowtie_dask.model.architectures import FlowPredictorModel

    torch.manual_seed(1)
    path = save_checkpoint(str(tmp_path / "paper.pt"), model=FlowPredictorModel(64, hidden=4).eval(), meta={})
    geo = geometry(n_det=8, centre=4.0)
    data = np.random.default_rng(5).random((3, 5, 5, 8, 8)).astype(np.float32)
    _, fast = FlowTIEPhase(path, dark_field_bin=4).field(data, geo)
    _, full = FlowTIEPhase(path, dark_field_bin=1).field(data, geo)
    assert np.array_equal(fast, full) and np.abs(full).max() > 0


def test_a_scan_without_contrast_runs_too():
    """Every input constant over the scan (vacuum): the stem's folding keeps one channel to convolve."""
    geo = geometry()
    data = np.full((3, 5, 6, 64, 64), 1.0 / 4096, np.float32)
    phase = FlowTIEPhase("paper-64", dark_field_bin=4)
    model, _ = phase._model("cpu")
    _, got = phase.field(data, geo)
    np.testing.assert_allclose(got, expanded_reference(model, data, geo, 4, phase.margin), rtol=1e-4, atol=1e-5)


def test_passes_spread_over_threads_give_the_same_field_and_restore_torchs_threads():
    from flowtie_dask.model.superpixels import grouped_network

    model = FlowTIEPhase("paper-64")._model("cpu")[0]
    rng = np.random.default_rng(6)
    didz = torch.from_numpy(rng.normal(size=(1, 23, 9, 10)).astype(np.float32)) * 1e-3
    i0 = torch.from_numpy(rng.random((1, 23, 9, 10)).astype(np.float32)) + 0.5
    x = model.input_features(didz, i0, torch.from_numpy(rng.normal(size=(23, 2)).astype(np.float32)))
    w = i0 * torch.arange(1, 24, dtype=torch.float32)[:, None, None]
    before = torch.get_num_threads()
    with torch.no_grad():
        one = grouped_network(model, x, w, 4, workers=1)
        two = grouped_network(model, x, w, 4, workers=3)
        whole = grouped_network(model, x, w, 23)
    assert torch.get_num_threads() == before
    assert torch.equal(one, two)
    torch.testing.assert_close(one, whole, rtol=1e-5, atol=1e-6)  # chunking changes only the order of sums
    assert not torch.allclose(one, grouped_network(model, x, i0, 4).detach(), rtol=1e-3)  # the weights matter


@pytest.mark.parametrize("padding", ["reflect", "zeros"])
def test_the_network_on_input_parts_equals_it_on_the_expanded_features(padding):
    """The constant channels handed over apart (not expanded over the scan: the stem folds them into a bias, or
    a pass expands only its own groups') give the field of the whole feature tensor, in the fast form's passes
    and in the model's own forward pass over pixel chunks."""
    from flowtie_dask.model.architectures import SharedFlowModel, join_features
    from flowtie_dask.model.superpixels import grouped_network

    torch.manual_seed(3)
    model = SharedFlowModel(hidden=8, padding_mode=padding).eval()
    rng = np.random.default_rng(7)
    didz = torch.from_numpy(rng.normal(size=(2, 23, 9, 10)).astype(np.float32)) * 1e-3
    i0 = torch.from_numpy(rng.random((2, 23, 9, 10)).astype(np.float32)) + 0.5
    q = torch.from_numpy(rng.normal(size=(23, 2)).astype(np.float32))
    scan, pixel = model.input_parts(didz, i0, q)
    assert scan.shape == (2, 2, 23, 9, 10) and pixel.shape == (2, 4, 23)
    x = model.input_features(didz, i0, q)
    assert torch.equal(join_features(scan, pixel), x) and x.shape == (2, 6, 23, 9, 10)
    assert torch.equal(x[:, 2:], pixel[..., None, None].expand_as(x[:, 2:]))  # constant over the scan
    with torch.no_grad():
        w = i0 * 2.0
        torch.testing.assert_close(grouped_network(model, (scan, pixel), w, 4), grouped_network(model, x, w, 4),
                                   rtol=1e-6, atol=1e-7)
        whole = model(didz, i0, q)
        torch.testing.assert_close(model(didz, i0, q, pixel_chunk=5), whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("boundary", ["mirror", "periodic"])
def test_the_phase_integrated_per_group_is_the_phase_of_the_spread_field(random_data, boundary):
    """__call__ integrates each group's field once and spreads the phase: the same as integrating every pixel
    (each pixel's field less its mean over the scan first, for a non-periodic boundary)."""
    from flowtie_dask.integrate import zero_mean_gradient
    from flowtie_dask.tie import integrate_gradient

    geo = geometry()
    phase = FlowTIEPhase("paper-64", dark_field_bin=4)
    i0, got = phase(random_data, geo, boundary=boundary)
    _, g = phase.field(random_data, geo)
    gx, gy = (g[0], g[1]) if boundary == "periodic" else (g[0] - g[0].mean(axis=(0, 1)), g[1] - g[1].mean(axis=(0, 1)))
    np.testing.assert_allclose(zero_mean_gradient(g[0], g[1], boundary=boundary)[0], gx, atol=1e-7)
    want = integrate_gradient(gx, gy, step=geo.scan_step, kind="forward", boundary=boundary)
    want = want + np.angle(geo.probe_spectrum(np)).astype(want.dtype)[None, None]
    assert got.shape == want.shape == i0.shape == (6, 7, 64, 64)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    assert np.abs(want - want[..., :1, :1]).max() > 1e-2  # not a flat phase

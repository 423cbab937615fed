import io
import json

import pytest
import torch

from flowtie_dask.model import FlowPredictorModel, SharedFlowModel, build_model

torch.set_num_threads(1)

SCANS = [(8, 8), (12, 20)]


def _inputs(p, scan, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    i0 = torch.rand((b, p) + scan, generator=g) / p
    didz = 1e-3 * torch.randn((b, p) + scan, generator=g) / p
    q = torch.randn(p, 2, generator=g)
    return didz, i0, q


def _n_params(m):
    return sum(p.numel() for p in m.parameters())


def paper_formula(p, d, k):
    # Conv(P→D) + BN(D) + Conv(D→D) + BN(D) + Conv(D→D) + Conv(D→2P): weights, biases, BN affine
    return (p * d * k * k + d) + 2 * d + (d * d * k * k + d) + 2 * d + (d * d * k * k + d) + (d * 2 * p * k * k + 2 * p)


@pytest.mark.parametrize("p", [16, 64, 256])
@pytest.mark.parametrize("scan", SCANS)
def test_flow_predictor_shapes(p, scan):
    m = FlowPredictorModel(p, hidden=16)
    didz, i0, q = _inputs(p, scan)
    assert m(didz, i0).shape == (2, 2, p) + scan
    assert m(didz).shape == (2, 2, p) + scan  # normalised by its own std without i0


@pytest.mark.parametrize("p,d,k", [(16, 16, 3), (64, 32, 3), (256, 8, 5), (4096, 128, 3)])
def test_flow_predictor_parameter_count_formula(p, d, k):
    m = FlowPredictorModel(p, hidden=d, kernel_size=k)
    assert _n_params(m) == paper_formula(p, d, k) == m.parameter_count_formula()
    assert FlowPredictorModel.count_parameters(p, d, k) == 3 * p * d * k * k + 2 * d * d * k * k + 7 * d + 2 * p
    assert m.receptive_field == 4 * (k // 2)


@pytest.mark.parametrize("p", [16, 64, 256])
@pytest.mark.parametrize("scan", SCANS)
def test_shared_model_shapes_any_detector(p, scan):
    m = SharedFlowModel(hidden=8)  # built without any detector size
    didz, i0, q = _inputs(p, scan)
    assert m(didz, i0, q).shape == (2, 2, p) + scan
    assert m(didz, i0, q[None].expand(2, p, 2)).shape == (2, 2, p) + scan


def test_shared_model_parameter_count_does_not_depend_on_detector():
    for kw in ({}, {"hidden": 8, "depth": 3}, {"hidden": 16, "kernel_size": 5, "mixing": False}):
        m = SharedFlowModel(**kw)
        assert _n_params(m) == m.parameter_count_formula() == SharedFlowModel.count_parameters(**kw)
        h, k, depth = m.hidden, m.kernel_size, m.depth
        expected = 6 * h * k * k + h + (depth - 2) * (h * h * k * k + h) + 2 * h * k * k + 2
        expected += (2 * h * h + h) if m.mixing else 0
        assert _n_params(m) == expected
        assert m.receptive_field == depth * (k // 2)
    m = SharedFlowModel(hidden=8)
    n = _n_params(m)
    for p in (16, 100, 256):
        didz, i0, q = _inputs(p, (8, 8))
        m(didz, i0, q)
        assert _n_params(m) == n


def test_shared_model_pixel_chunks_give_the_same_output():
    m = SharedFlowModel(hidden=8)
    didz, i0, q = _inputs(50, (8, 10))
    with torch.no_grad():
        full = m(didz, i0, q)
        chunked = m(didz, i0, q, pixel_chunk=7)
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mixing", [True, False])
def test_shared_model_mixing_lets_pixels_see_the_pattern(mixing):
    m = SharedFlowModel(hidden=8, mixing=mixing)
    didz, i0, q = _inputs(16, (8, 8), b=1)
    didz2 = didz.clone()
    didz2[:, 0] += 1e-2 / 16
    with torch.no_grad():
        d = (m(didz2, i0, q) - m(didz, i0, q)).abs()
    assert d[:, :, 0].max() > 0
    if mixing:
        assert d[:, :, 1:].max() > 1e-6
    else:
        assert d[:, :, 1:].max() == 0


@pytest.mark.parametrize("model", [FlowPredictorModel(16, hidden=8), SharedFlowModel(hidden=8, depth=3),
                                   SharedFlowModel(hidden=8, kernel_size=5, depth=2)])
def test_receptive_field(model):
    model.eval()  # BatchNorm statistics of the batch would couple all positions in train mode
    didz, i0, q = _inputs(16, (24, 24), b=1)
    didz2 = didz.clone()
    didz2[..., 12, 12] += 1e-2 / 16
    with torch.no_grad():
        d = (model(didz2, i0, q) - model(didz, i0, q)).abs().amax(dim=(0, 1, 2))
    rows = torch.nonzero(d.amax(dim=1) > 0).ravel()
    cols = torch.nonzero(d.amax(dim=0) > 0).ravel()
    rf = model.receptive_field  # (i0 is unchanged, so the SharedFlowModel's normalisation and context are too)
    assert rows.min() == 12 - rf and rows.max() == 12 + rf
    assert cols.min() == 12 - rf and cols.max() == 12 + rf


@pytest.mark.parametrize("model", [FlowPredictorModel(64, hidden=8, kernel_size=5),
                                   SharedFlowModel(hidden=8, depth=3, mixing=True, padding_mode="replicate")])
def test_config_round_trip_and_weights_only_checkpoint(model):
    didz, i0, q = _inputs(64, (8, 12))
    model.eval()
    cfg = json.loads(json.dumps(model.config()))
    assert cfg["name"] == type(model).__name__
    buf = io.BytesIO()
    torch.save({"config_json": json.dumps(cfg), "state_dict": model.state_dict()}, buf)
    buf.seek(0)
    payload = torch.load(buf, weights_only=True)
    rebuilt = build_model(json.loads(payload["config_json"]))
    rebuilt.load_state_dict(payload["state_dict"])
    rebuilt.eval()
    assert type(rebuilt) is type(model)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(didz, i0, q), model(didz, i0, q), rtol=0, atol=0)
    # the nested form is accepted too
    nested = {"class": cfg.pop("name"), "kwargs": cfg}
    assert build_model(nested).config() == model.config()
    with pytest.raises(ValueError, match="unknown model class"):
        build_model({"name": "Nope"})


def test_inputs_are_normalised_by_the_models():
    """Scaling the intensities (dose, pattern normalisation) does not change the prediction."""
    didz, i0, q = _inputs(16, (8, 8))
    for m in (FlowPredictorModel(16, hidden=8).eval(), SharedFlowModel(hidden=8)):
        with torch.no_grad():
            torch.testing.assert_close(m(37.0 * didz, 37.0 * i0, q), m(didz, i0, q), rtol=1e-4, atol=1e-5)


def test_shared_model_needs_i0_and_q():
    didz, i0, q = _inputs(16, (8, 8))
    with pytest.raises(ValueError, match="needs i0 and q"):
        SharedFlowModel(hidden=8)(didz)
    with pytest.raises(ValueError, match="built for P = 16"):
        FlowPredictorModel(16, hidden=8)(didz[:, :8])

"""The dimensionless FlowTIE model: inputs invariant across optics with equal dimensionless groups, the trained
ranges accepted inside and refused outside per quantity, and the warm start from a SharedFlowModel exact."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from flowtie_dask.geometry import ReconstructionGeometry
from flowtie_dask.model.architectures import SharedFlowModel
from flowtie_dask.model.checkpoint import CheckpointError, check_compatible, dimensionless_record
from flowtie_dask.model.dimensionless import DimensionlessFlowModel, from_shared
from flowtie_dask.model.optics_groups import dimensionless_groups, optics_inputs
from flowtie_dask.physics.constants import wavelength
from flowtie_dask.physics.optics import Aberrations, probe_fourier
from flowtie_dask.tie import defocus_derivative


def _series(energy, semiangle, dz, edge, *, n=32, scan=8, step=0.25, cell=8.0):
    """A thin phase object scanned by the probe of these optics: intensities (3, scan, scan, n, n) at C10 = +dz,
    0, −dz, computed by FFT on a periodic n×n grid of pixel cell/n (the scan moves by whole pixels)."""
    dx = cell / n
    x = np.arange(n) * dx
    xx, yy = np.meshgrid(x, x, indexing="ij")
    phase = 0.6 * np.cos(2 * np.pi * xx / cell) * np.sin(4 * np.pi * yy / cell) + 0.3 * np.cos(2 * np.pi * (xx + yy) / cell)
    obj = np.exp(1j * phase)
    out = np.empty((3, scan, scan, n, n))
    shift = int(round(step / dx))
    for d, c10 in enumerate((dz, 0.0, -dz)):
        probe = np.fft.ifft2(probe_fourier((n, n), (dx, dx), energy=energy, semiangle=semiangle,
                                           aberrations=Aberrations(C10=c10), edge=edge))
        for i in range(scan):
            for j in range(scan):
                exit_wave = np.roll(probe, (i * shift, j * shift), axis=(0, 1)) * obj
                out[d, i, j] = np.fft.fftshift(np.abs(np.fft.fft2(exit_wave)) ** 2) / n**2
    return out


def _geometry(energy, semiangle, dz, edge, *, n=32, scan=8, step=0.25, cell=8.0, cs=0.0):
    return ReconstructionGeometry(energy=energy, semiangle=semiangle, aperture_edge=edge, focus_c10=0.0,
                                  aberrations={"C30": cs} if cs else {}, scan_shape=(scan, scan),
                                  scan_step=(step, step), detector_shape=(n, n),
                                  detector_sampling=(1 / cell, 1 / cell), detector_center=(n // 2, n // 2),
                                  periodic=True, c10=(dz, 0.0, -dz))


def _inputs(series, geo):
    didz, i0 = defocus_derivative(series, geo.c10)
    p = geo.detector_shape[0] * geo.detector_shape[1]
    flat = lambda a: torch.from_numpy(np.moveaxis(a.reshape(a.shape[0], a.shape[1], p), -1, 0)[None].copy())  # noqa: E731
    qx, qy = geo.q_vectors()
    q = torch.from_numpy(np.stack(np.meshgrid(qx, qy, indexing="ij"), -1).reshape(p, 2))
    return flat(didz), flat(i0), q


def test_inputs_are_the_same_at_two_energies_with_equal_groups():
    """200 kV / 25 mrad / ±30 Å / 1 mrad edge and 80 kV with α and the edge scaled by λ and Δz by 1/λ: the same
    probe (equal dimensionless groups), the same patterns, the same input tensors to 1e-5 — although ∂I/∂C10
    itself differs by λ₁/λ₂ between the two."""
    l1, l2 = wavelength(200e3), wavelength(80e3)
    a1, dz1, e1 = 25.0, 30.0, 1.0
    a2, dz2, e2 = a1 * l2 / l1, dz1 * l1 / l2, e1 * l2 / l1
    s1, s2 = _series(200e3, a1, dz1, e1), _series(80e3, a2, dz2, e2)
    np.testing.assert_allclose(s1, s2, rtol=1e-9, atol=1e-14)  # the same physical experiment
    g1, g2 = _geometry(200e3, a1, dz1, e1), _geometry(80e3, a2, dz2, e2)
    for k, v in dimensionless_groups(optics_inputs(g1)).items():
        assert dimensionless_groups(optics_inputs(g2))[k] == pytest.approx(v, rel=1e-12, abs=1e-15), k
    model = DimensionlessFlowModel(hidden=4, depth=2)
    (d1, i1, q1), (d2, i2, q2) = _inputs(s1, g1), _inputs(s2, g2)
    assert float((d1 - d2).abs().max()) > 0.1 * float(d1.abs().max())  # the raw derivatives differ …
    f1 = model.input_features(d1, i1, q1, optics=optics_inputs(g1))
    f2 = model.input_features(d2, i2, q2, optics=optics_inputs(g2))
    assert f1.shape == (1, 12, 32 * 32, 8, 8)
    scale = f1.abs().amax(dim=(0, 2, 3, 4), keepdim=True).clamp_min(1e-12)
    assert float(((f1 - f2).abs() / scale).max()) < 1e-5  # … the inputs do not


def test_tie_coefficient_is_the_grid_tie():
    """Input 0 is A = (2π s²/λ)(∂I/∂C10)/Ī: for a weak phase object in the bright field, −∇²_n φ ≈ A on the scan
    grid in steps, so A must equal the discrete Laplacian (per step²) of the probe-frame phase to first order:
    checked through its scaling — doubling the step with the same data quadruples A."""
    geo = _geometry(300e3, 20.0, 20.0, 0.0)
    s = _series(300e3, 20.0, 20.0, 0.0)
    d, i, q = _inputs(s, geo)
    model = DimensionlessFlowModel(hidden=4, depth=2)
    a1 = model.input_features(d, i, q, optics=optics_inputs(geo))[:, 0]
    a2 = model.input_features(d, i, q, optics=optics_inputs(dataclasses.replace(geo, scan_step=(0.5, 0.5))))[:, 0]
    torch.testing.assert_close(a2, 4 * a1, rtol=1e-6, atol=1e-9)
    ib = i.mean(dim=(-2, -1), keepdim=True)
    expected = 2 * math.pi * 0.25**2 / wavelength(300e3) * d / ib.clamp_min(1e-3 * float(ib.max()))
    torch.testing.assert_close(a1, expected, rtol=1e-5, atol=1e-9)


def test_batched_optics_equal_per_sample_calls():
    torch.manual_seed(0)
    model = DimensionlessFlowModel(hidden=8, depth=3).eval()
    geos = [_geometry(200e3, 25.0, 30.0, 0.5), _geometry(80e3, 30.0, 40.0, 0.0, cs=2e4)]
    didz, i0, q = torch.randn(2, 64, 8, 8) * 1e-3, torch.rand(2, 64, 8, 8) + 0.1, torch.randn(64, 2)
    opts = [optics_inputs(g) for g in geos]
    batched = {k: torch.tensor([o[k] for o in opts]) for k in opts[0]}
    with torch.no_grad():
        both = model(didz, i0, q, optics=batched)
        one = torch.cat([model(didz[b:b + 1], i0[b:b + 1], q, optics=opts[b]) for b in range(2)])
    torch.testing.assert_close(both, one, rtol=1e-5, atol=1e-6)
    assert float((both[0] - both[1]).abs().max()) > 0  # the optics enter


def test_from_shared_is_exact_at_its_optics_and_differs_elsewhere():
    torch.manual_seed(1)
    old = SharedFlowModel(hidden=8, depth=3).eval()
    geo = _geometry(300e3, 20.0, 20.0, 0.0, step=0.18)
    new = from_shared(old, optics_inputs(geo)).eval()
    didz, i0, q = torch.randn(1, 64, 8, 8) * 1e-2, torch.rand(1, 64, 8, 8) + 0.5, torch.randn(64, 2)
    with torch.no_grad():
        torch.testing.assert_close(new(didz, i0, q, optics=optics_inputs(geo)), old(didz, i0, q), rtol=1e-5, atol=1e-6)
        other = new(didz, i0, q, optics=optics_inputs(dataclasses.replace(geo, scan_step=(0.3, 0.3))))
        assert float((other - old(didz, i0, q)).abs().max()) > 1e-4
    with pytest.raises(ValueError, match="SharedFlowModel"):
        from_shared(new, optics_inputs(geo))


def test_model_needs_its_optics():
    model = DimensionlessFlowModel(hidden=4, depth=2)
    with pytest.raises(ValueError, match="optics"):
        model(torch.rand(1, 4, 4, 4), torch.rand(1, 4, 4, 4), torch.zeros(4, 2))
    opts = optics_inputs(_geometry(300e3, 20.0, 20.0, 0.0))
    with pytest.raises(ValueError, match="lacks cs"):
        model(torch.rand(1, 4, 4, 4), torch.rand(1, 4, 4, 4), torch.zeros(4, 2),
              optics={k: v for k, v in opts.items() if k != "cs"})


# ---- the trained ranges --------------------------------------------------------------------------------------

_BASE = _geometry(200e3, 25.0, 30.0, 0.5, step=0.25, cs=1e4)


def _record():
    """A record whose ranges span ±20 % around _BASE's groups (and 100–300 kV)."""
    rec = dimensionless_record([_BASE], dose=[1e3, 1e6])
    for k, (lo, hi) in rec["ranges"].items():
        rec["ranges"][k] = [lo * 0.8, hi * 1.2] if k != "energy_kV" else [100.0, 300.0]
    return rec


def test_record_states_the_groups_and_the_dose():
    rec = dimensionless_record([_BASE, dataclasses.replace(_BASE, scan_step=(0.4, 0.4))], dose=[1e3, 1e6])
    assert rec["kind"] == "dimensionless" and rec["dose_per_pattern"] == [1e3, 1e6]
    k = _BASE.semiangle * 1e-3 / wavelength(200e3)
    assert rec["ranges"]["step_probe"] == pytest.approx([0.25 * k, 0.4 * k])
    assert rec["ranges"]["energy_kV"] == [200.0, 200.0]


def test_record_accepts_inside():
    check_compatible(_record(), _BASE)
    check_compatible(_record(), dataclasses.replace(_BASE, scan_step=(0.27, 0.27), semiangle=24.0))


@pytest.mark.parametrize("group, change", [
    ("step_probe", {"scan_step": (0.5, 0.5)}),
    ("defocus_phase", {"c10": (80.0, 0.0, -80.0)}),
    ("cs_phase", {"aberrations": {"C30": 5e4}}),
    ("pixel_aperture", {"detector_sampling": (0.3, 0.3)}),
    ("edge_aperture", {"aperture_edge": 3.0}),
    ("step_ratio", {"scan_step": (0.25 * 1.3, 0.25 / 1.3)}),
    ("energy_kV", {"energy": 60e3, "semiangle": 25.0 * wavelength(60e3) / wavelength(200e3),
                   "aperture_edge": 0.5 * wavelength(60e3) / wavelength(200e3),
                   "c10": tuple(c * wavelength(200e3) / wavelength(60e3) for c in (30.0, 0.0, -30.0)),
                   "aberrations": {"C30": 1e4 * (wavelength(200e3) / wavelength(60e3)) ** 3}}),
])
def test_record_refuses_outside_naming_the_quantity(group, change):
    geo = dataclasses.replace(_BASE, **change)
    with pytest.raises(CheckpointError) as err:
        check_compatible(_record(), geo)
    message = str(err.value)
    assert message.startswith(f"the model was trained for {group} (") and "--method tie" in message
    assert "\n" not in message


def test_incomplete_dimensionless_record_is_refused():
    rec = _record()
    del rec["ranges"]["cs_phase"]
    with pytest.raises(CheckpointError, match="lacks cs_phase"):
        check_compatible(rec, _BASE, source="'m.pt'")


# ---- the dose-aware model ----------------------------------------------------------------------------------------

def test_shot_noise_channel_is_each_pixels_relative_count_noise():
    """Channel 12 is 1/√(1 + N·Ī) with Ī the pixel's scan mean as a fraction of the pattern (a slow reference),
    0 for noise-free data (N = 0 or ∞), per sample in a batch, and per pixel when N is given per pixel."""
    from flowtie_dask.model.dimensionless import DoseAwareFlowModel

    model = DoseAwareFlowModel(hidden=4, depth=2)
    rng = np.random.default_rng(5)
    i0 = rng.random((2, 16, 5, 5)) ** 4
    i0 /= i0.sum(axis=1, keepdims=True)  # unit pattern sums
    didz, q = torch.zeros(2, 16, 5, 5), torch.randn(16, 2)
    opts = optics_inputs(_geometry(200e3, 25.0, 30.0, 0.5))
    i0_t = torch.from_numpy(i0)
    mean = i0.mean(axis=(-2, -1))  # (2, 16)
    for n, want in [(0.0, np.zeros_like(mean)), (math.inf, np.zeros_like(mean)), (1e3, 1 / np.sqrt(1 + 1e3 * mean))]:
        x = model.input_features(didz.double(), i0_t, q, optics=dict(opts, electrons=n))
        assert x.shape == (2, 13, 16, 5, 5)
        np.testing.assert_allclose(x[:, 12].numpy(), np.broadcast_to(want[..., None, None], (2, 16, 5, 5)), rtol=1e-6)
    per_sample = model.input_features(didz.double(), i0_t, q, optics=dict(opts, electrons=torch.tensor([1e3, 0.0])))
    np.testing.assert_allclose(per_sample[:, 12, :, 0, 0].numpy(), [1 / np.sqrt(1 + 1e3 * mean[0]), np.zeros(16)],
                               rtol=1e-6)
    m = torch.arange(1, 17, dtype=torch.float64)  # per pixel (super-pixels of m members)
    per_pixel = model.input_features(didz.double(), i0_t, q, optics=dict(opts, electrons=1e3 * m))
    np.testing.assert_allclose(per_pixel[:, 12, :, 0, 0].numpy(), 1 / np.sqrt(1 + 1e3 * m.numpy() * mean), rtol=1e-6)
    assert float(x[:, 12].min()) > 0 and float(x[:, 12].max()) < 1


def test_dose_aware_starts_as_the_dimensionless_model_at_every_dose():
    from flowtie_dask.model.dimensionless import DoseAwareFlowModel, with_dose_input

    torch.manual_seed(2)
    old = DimensionlessFlowModel(hidden=8, depth=3).eval()
    new = with_dose_input(old).eval()
    assert isinstance(new, DoseAwareFlowModel) and new.count_parameters(8, 3, 3) == old.count_parameters(8, 3, 3) + 8 * 9
    opts = optics_inputs(_geometry(200e3, 25.0, 30.0, 0.5))
    didz, i0, q = torch.randn(1, 64, 8, 8) * 1e-3, torch.rand(1, 64, 8, 8) + 0.1, torch.randn(64, 2)
    i0 = i0 / i0.sum(dim=1, keepdim=True)
    with torch.no_grad():
        ref = old(didz, i0, q, optics=opts)
        for n in (0.0, 1e3, 1e6):
            torch.testing.assert_close(new(didz, i0, q, optics=dict(opts, electrons=n)), ref, rtol=0, atol=0)
        new.stem.weight[:, 12] = 1.0  # once the channel has weight, the dose enters; noise-free is N = 0 or ∞
        noisy, clean = new(didz, i0, q, optics=dict(opts, electrons=1e3)), new(didz, i0, q, optics=opts)
        assert float((noisy - clean).abs().max()) > 1e-3
        torch.testing.assert_close(new(didz, i0, q, optics=dict(opts, electrons=math.inf)), clean, rtol=0, atol=0)
    with pytest.raises(ValueError, match="DimensionlessFlowModel"):
        with_dose_input(new)

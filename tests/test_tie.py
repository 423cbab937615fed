import numpy as np
import pytest

from flowtie_dask.projection import divide_illumination
from flowtie_dask.reconstruct import project_tile, tie_phase_of_tile
from flowtie_dask.tie import (
    defocus_derivative,
    forward_differences,
    integrate_gradient,
    mirror_extend,
    smooth_gradient,
    wrap_gradient,
)
from tests.conftest import design_mse, weak_object_series


@pytest.fixture(scope="module")
def weak():
    return weak_object_series(64, 0.2)


def _project(i0, phase, geometry, eps=1e-3):
    n = geometry.scan_shape[0]
    _, num, ill = project_tile(i0, phase, geometry, xs=range(n), ys=range(n), periodic=True)
    return np.angle(divide_illumination(num, ill, eps=eps))


def test_defocus_derivative_follows_the_stored_c10():
    i = np.stack([np.full(3, 5.0), np.full(3, 2.0), np.full(3, 1.0)])
    d, i0 = defocus_derivative(i, (20.0, 0.0, -20.0))  # first scan has the largest C10
    np.testing.assert_allclose(d, (5 - 1) / 40)
    np.testing.assert_allclose(i0, 2.0)
    d2, _ = defocus_derivative(i[::-1], (-20.0, 0.0, 20.0))
    np.testing.assert_allclose(d2, d)
    with pytest.raises(ValueError, match="must differ"):
        defocus_derivative(i, (0.0, 0.0, 0.0))


@pytest.mark.parametrize("c10", [(20.0, 0.0, -20.0), (-20.0, 0.0, 20.0), (0.0, 20.0, -20.0)])
def test_the_tie_field_written_over_its_block_equals_the_plain_one(c10):
    """The runner's field stage gives its block up (``own``): with the focus second the field is a view of the
    block (nothing allocated), with any other order a new array; both equal the plain difference."""
    from dataclasses import replace

    from flowtie_dask.methods import get_method

    _, _, _, g = weak_object_series(16, 0.2)
    g = replace(g, c10=c10)
    rng = np.random.default_rng(3)
    block = rng.random((3, 16, 16, *g.detector_shape), dtype=np.float32)
    lo, mid, hi = np.argsort(c10)
    want_d, want_i0 = (block[hi] - block[lo]) / (c10[hi] - c10[lo]), block[mid].copy()
    plain_i0, plain = get_method("tie").field(block.copy(), g)
    given = block.copy()
    i0, field = get_method("tie").field(given, g, own=True)
    for f, i in ((plain, plain_i0), (field, i0)):
        np.testing.assert_allclose(f[0], want_d, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(f[1], want_i0)
        np.testing.assert_array_equal(i, want_i0)
    assert np.shares_memory(field, given) == (mid == 1)
    assert not np.shares_memory(plain, block)


def test_tie_matches_integrating_the_exact_smooth_gradient(weak):
    """DESIGN §6: classical TIE ≈ integrated exact smooth gradient (1.42e-3 vs 1.38e-3 there)."""
    inten, psi, obj, g = weak
    i0, phase = tie_phase_of_tile(inten, g, boundary="periodic")
    mse_tie = design_mse(_project(i0, phase, g), obj)
    gx, gy = smooth_gradient(psi, step=g.scan_step)
    mse_smooth = design_mse(_project(inten[1], integrate_gradient(gx, gy, step=g.scan_step, kind="spectral"), g), obj)
    mse_zero = design_mse(_project(inten[1], np.zeros_like(phase), g), obj)
    assert abs(mse_tie - mse_smooth) < 0.2 * mse_smooth
    assert mse_tie < 0.5 * mse_zero  # TIE beats the zero-phase exit wave (DESIGN: 1.42e-3 vs 4.82e-3)


def test_exact_wrapped_forward_differences_reproduce_the_object(weak):
    inten, psi, obj, g = weak
    gx, gy = forward_differences(np.angle(psi), step=g.scan_step)
    phi = integrate_gradient(gx, gy, step=g.scan_step, kind="forward")
    assert design_mse(_project(inten[1], phi, g, eps=1e-12), obj) < 1e-6  # float32 data; DESIGN: 2e-9
    # the smooth (wrapped-difference) form loses the vortices: no better than TIE
    sx, sy = wrap_gradient(gx, g.scan_step[0]), wrap_gradient(gy, g.scan_step[1])
    phi_s = integrate_gradient(sx, sy, step=g.scan_step, kind="forward")
    assert design_mse(_project(inten[1], phi_s, g), obj) > 100 * design_mse(_project(inten[1], phi, g, eps=1e-12), obj)


@pytest.mark.parametrize("boundary", ["periodic", "mirror"])
def test_forward_integrator_inverts_forward_differences(rng, boundary):
    phi = rng.standard_normal((20, 14, 3))
    if boundary == "periodic":
        gx, gy = forward_differences(phi, step=(0.3, 0.5))
    else:  # non-periodic: differences inside the tile only
        gx = np.zeros_like(phi)
        gy = np.zeros_like(phi)
        gx[:-1] = np.diff(phi, axis=0) / 0.3
        gy[:, :-1] = np.diff(phi, axis=1) / 0.5
    out = integrate_gradient(gx, gy, step=(0.3, 0.5), kind="forward", boundary=boundary)
    np.testing.assert_allclose(out, phi - phi.mean(axis=(0, 1)), atol=1e-9)


@pytest.mark.parametrize("boundary", ["periodic", "mirror"])
def test_spectral_integrator_on_a_smooth_map(boundary):
    x = np.linspace(0, 1, 48, endpoint=False)
    X, Y = np.meshgrid(x, x, indexing="ij")
    if boundary == "periodic":
        phi = np.sin(2 * np.pi * X) * np.cos(4 * np.pi * Y)
        gx = 2 * np.pi * np.cos(2 * np.pi * X) * np.cos(4 * np.pi * Y)
        gy = -4 * np.pi * np.sin(2 * np.pi * X) * np.sin(4 * np.pi * Y)
        tol = 1e-9
    else:  # a non-periodic map: the mirror extension avoids wrap-around artefacts
        phi = 0.7 * X**2 + 0.3 * X * Y
        gx, gy = 1.4 * X + 0.3 * Y, 0.3 * X
        tol = 5e-3
    out = integrate_gradient(gx / 48, gy / 48, step=(1 / 48 / 48, 1 / 48 / 48), kind="spectral", boundary=boundary)
    out = integrate_gradient(gx, gy, step=(1 / 48, 1 / 48), kind="spectral", boundary=boundary)
    err = np.sqrt(np.mean((out - (phi - phi.mean())) ** 2)) / phi.std()
    assert err < tol
    if boundary == "mirror":
        per = integrate_gradient(gx, gy, step=(1 / 48, 1 / 48), kind="spectral", boundary="periodic")
        assert np.sqrt(np.mean((per - (phi - phi.mean())) ** 2)) / phi.std() > 10 * err


def test_mirror_extension_flips_the_detector_with_the_scan():
    x = np.arange(2 * 3 * 4 * 4, dtype=float).reshape(2, 3, 4, 4)
    flip = np.array([0, 3, 2, 1])  # q → −q about pixel 2 on a 4-pixel detector
    ext = mirror_extend(x, flip_axes=(flip, None))
    assert ext.shape == (4, 6, 4, 4)
    np.testing.assert_array_equal(ext[3, :3], x[0][:, flip])
    np.testing.assert_array_equal(ext[0, 5], x[0, 0])


def test_mirror_tie_on_a_periodic_scan_is_close_to_the_periodic_solution():
    inten, psi, obj, g = weak_object_series(48, 0.25)
    i0, per = tie_phase_of_tile(inten, g, boundary="periodic")
    _, mir = tie_phase_of_tile(inten, g, boundary="mirror")
    mse_per = design_mse(_project(i0, per, g), obj)
    mse_mir = design_mse(_project(i0, mir, g), obj)
    assert mse_mir < 1.6 * mse_per


def test_a_mirrored_object_has_the_mirrored_detector():
    """The premise of the mirror boundary: the mirror image of an object has, at scan position −x, the
    patterns of the object at +x with q_x → −q_x (so mirroring the scan must mirror the detector)."""
    from flowtie_dask.physics import probe_fourier
    from flowtie_dask.simulate.multislice import simulate_positions
    from flowtie_dask.tie import _flip_taps
    from tests.conftest import weak_phase_object

    n, step = 32, 0.25
    obj = weak_phase_object(n, step, 1.0, seed=3)
    mirrored = np.roll(obj[::-1], 1, axis=0)  # O'(x) = O(−x) on the periodic grid
    probe = probe_fourier((n, n), (step, step), energy=300e3, semiangle=20)[None]
    ix, iy = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    pos = np.stack([ix.ravel(), iy.ravel()], 1) * step
    run = lambda o: simulate_positions(pos, probes=probe, transmissions=np.exp(1j * o)[None, None],  # noqa: E731
                                       propagator=np.ones((n, n)), sampling=(step, step),
                                       detector_shape=(n, n))[0][0].reshape(n, n, n, n)
    a, b = run(obj), run(mirrored)
    idx, w = _flip_taps(n, n // 2)
    assert w.tolist() == [1.0]  # a whole-pixel centre: an exact permutation
    flip = idx[:, 0]
    expected = np.roll(a[::-1], 1, axis=0)[:, :, flip, :]  # scan −x, detector −q_x
    np.testing.assert_allclose(b, expected, atol=1e-6)
    assert not np.allclose(b, np.roll(a[::-1], 1, axis=0), atol=1e-4)  # without the detector flip it differs


def test_the_detector_mirror_about_a_fractional_centre_is_interpolated_not_rounded():
    """A measured beam centre is rarely on the half-pixel grid: the pixel at −q about c = 30.3 is interpolated
    (Keys cubic), so a pattern symmetric about c maps to itself; rounding 2c − j would shift it by 0.4 px."""
    from flowtie_dask.tie import _flip_taps

    n, c = 64, 30.3
    j = np.arange(n)
    pattern = np.exp(-((j - c) / 5.0) ** 2)  # symmetric about c
    idx, w = _flip_taps(n, c)
    assert idx.shape == (n, 4) and np.isclose(w.sum(), 1.0)
    flipped = (pattern[idx] * w).sum(axis=1)
    inner = slice(10, 50)
    assert np.abs(flipped - pattern)[inner].max() < 2e-3
    rounded = pattern[np.mod(np.rint(2 * c - j).astype(int), n)]
    assert np.abs(rounded - pattern)[inner].max() > 10 * np.abs(flipped - pattern)[inner].max()


@pytest.mark.parametrize("center", [(6.0, 5.0), (6.3, 4.6)])
def test_a_window_of_detector_rows_gives_the_full_detectors_rows(rng, center):
    """The global path solves blocks of detector rows: tie_phase on the rows that mirror_rows names (a window)
    returns exactly the full detector's solution of those rows, for a whole-pixel centre and one between
    pixels (four-tap images); a window without the image rows is refused."""
    from flowtie_dask.tie import mirror_row_ranges, mirror_rows, tie_phase

    rx, ry, nqx, nqy = 10, 9, 12, 11
    i0 = 1.0 + rng.random((rx, ry, nqx, nqy))
    didz = rng.standard_normal((rx, ry, nqx, nqy))
    qx, qy = (np.arange(nqx) - center[0]) * 0.1, (np.arange(nqy) - center[1]) * 0.1
    kw = dict(qx=qx, qy=qy, wavelength=0.0197, step=(0.2, 0.25), center=center, eps=0.3)
    ibar_max = float(i0.mean(axis=(0, 1)).max())
    for boundary in ("periodic", "mirror"):
        full = tie_phase(didz, i0, boundary=boundary, **kw)
        for rows in ((0, 3), (4, 8), (9, 12)):
            lo, hi = mirror_rows(rows, nqx, center[0]) if boundary == "mirror" else rows
            part = tie_phase(didz[:, :, lo:hi], i0[:, :, lo:hi], boundary=boundary, row0=lo, rows=rows,
                             ibar_max=ibar_max, **kw)
            np.testing.assert_allclose(part, full[:, :, rows[0]:rows[1]], rtol=0, atol=1e-12)
            # only the rows read, as ranges (a block far from the centre: itself and its image's rows)
            ranges = mirror_row_ranges(rows, nqx, center[0]) if boundary == "mirror" else (rows,)
            held = np.concatenate([np.arange(a, b) for a, b in ranges])
            assert set(held) <= set(range(lo, hi)) and set(range(*rows)) <= set(held)
            part = tie_phase(didz[:, :, held], i0[:, :, held], boundary=boundary, row0=held, rows=rows,
                             ibar_max=ibar_max, **kw)
            np.testing.assert_allclose(part, full[:, :, rows[0]:rows[1]], rtol=0, atol=1e-12)
            if boundary == "mirror" and len(ranges) > 1:
                assert len(held) < hi - lo  # fewer rows than the one range mirror_rows names
    with pytest.raises(ValueError, match="outside the window"):
        tie_phase(didz[:, :, :4], i0[:, :, :4], boundary="mirror", row0=0, rows=(0, 2), **kw)
    with pytest.raises(ValueError, match="ascending"):
        tie_phase(didz[:, :, :2], i0[:, :, :2], boundary="periodic", row0=[3, 1], rows=(3, 4), **kw)

"""Synthetic defocus series with KNOWN spoiling, from the project's own simulator (for the calibration tests).

:func:`clean_series` simulates the three scans with the multislice kernel, each at its own scan positions
(the focus grid plus a sub-pixel drift, exact on the periodic cell: the probe is shifted in Fourier space);
:func:`spoil_detector` moves, rotates and transposes the patterns — the inverse of what
:func:`flowtie_dask.geometry.orient_patterns` undoes — and :func:`spoiled_store` writes the result, with shot
noise, as a scan store whose metadata knows nothing of the spoiling.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage

from flowtie_dask.simulate.multislice import poisson_noise, simulate_positions
from flowtie_dask.simulate.series import SimulationParameters, plan_simulation
from flowtie_dask.store import write_scan_store


@functools.lru_cache(maxsize=8)
def clean_series(drift_steps=((0.0, 0.0),) * 3, *, scan=48, material="GaAs", cells=2, thickness_cells=1):
    """Noise-free series (3, Rx, Ry, 64, 64), unit-sum patterns; scan s sees the focus grid + drift_steps[s].

    Returns the intensity and the plan (its metadata: periodic, centred, unrotated)."""
    params = SimulationParameters(material=material, lateral_cells=cells, thickness_cells=thickness_cells,
                                  detector_pixels=64, scan_pixels=scan)
    plan = plan_simulation(params)
    base = plan.positions(slice(None), slice(None))
    step = np.asarray(plan.scan_step)
    out = []
    for s in range(3):
        pos = base + np.asarray(drift_steps[s], dtype=float) * step
        inten, _ = simulate_positions(pos, probes=plan.probes[s:s + 1], transmissions=plan.transmissions,
                                      propagator=plan.propagator, sampling=plan.sampling,
                                      detector_shape=plan.detector_shape, batch_size=512)
        out.append(inten[0].reshape((scan, scan) + plan.detector_shape))
    return np.stack(out), plan


def _rot(deg):
    t = math.radians(deg)
    return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])


def spoil_detector(patterns, *, offset=(0.0, 0.0), rotation=0.0, transpose=False):
    """Raw detector frames whose orientation (rotation, transpose) ``orient_patterns`` undoes, beam moved by
    ``offset`` pixels (in the raw frame).

    A feature at u (relative to the array centre c = (N−1)/2) of a true pattern lands at raw pixel
    p = S·R(−θ)·u + c + offset, so that orient_patterns(raw, θ, transpose) puts it back at u + R(θ)·S·offset.

    Returns
    -------
    raw : ndarray, the shape of ``patterns``
    centre : (float, float)
        Raw pixel of the zero frequency (the true ``detector_center``).
    """
    n = patterns.shape[-1]
    c = np.full(2, (n - 1) / 2)
    s = np.array([[0.0, 1.0], [1.0, 0.0]]) if transpose else np.eye(2)
    m = _rot(rotation) @ s
    o = np.asarray(offset, dtype=float)
    shift = c - m @ (c + o)
    flat = patterns.reshape((-1, n, n))
    raw = np.stack([ndimage.affine_transform(p, m, offset=shift, order=1, mode="constant") for p in flat])
    raw = raw.reshape(patterns.shape).astype(np.float32)  # linear: no ringing, no negative values
    z = np.full(2, n // 2, dtype=float)
    centre = c + o + s @ _rot(-rotation) @ (z - c)
    return raw, (float(centre[0]), float(centre[1]))


def spoiled_store(path, *, drift_steps=((0.0, 0.0),) * 3, offset=(0.0, 0.0), rotation=0.0, transpose=False,
                  electrons=None, crop=None, scan=48, seed=0, descan=None):
    """Write a spoiled series as a scan store (metadata: centred, unrotated, no drift); returns the truth.

    ``crop`` = (x0, y0, n): keep scan positions [x0, x0+n) × [y0, y0+n) (a non-periodic field of view).
    ``descan`` = ((s00, s01), (s10, s11)): the beam also moves by s[k][a] raw detector pixels per scan step along
    scan axis a (detector axis k), about the scan's middle, in every scan (linear interpolation).
    Returns a dict: ``centre`` (raw px), ``rotation``, ``transpose``, ``drift_A`` (3, 2) and ``drift_steps``.
    """
    inten, plan = clean_series(tuple(tuple(float(v) for v in d) for d in drift_steps), scan=scan)
    if crop is not None:
        x0, y0, n = crop
        inten = inten[:, x0:x0 + n, y0:y0 + n]
    raw, centre = spoil_detector(inten, offset=offset, rotation=rotation, transpose=transpose)
    if descan is not None:
        slope = np.asarray(descan, dtype=float)
        rx, ry = raw.shape[1:3]
        for i in range(rx):
            for j in range(ry):
                d = slope @ np.array([i - (rx - 1) / 2, j - (ry - 1) / 2])
                for s in range(3):
                    raw[s, i, j] = ndimage.shift(raw[s, i, j], d, order=1, mode="constant")
    if electrons:
        shape = raw.shape
        flat = raw.reshape((-1,) + shape[-2:])
        keys = np.arange(flat.shape[0])[:, None]
        raw = np.asarray(poisson_noise(flat, electrons=electrons, seed=seed, keys=keys)).reshape(shape)
    meta = plan.metadata.replace(periodic=crop is None)
    with write_scan_store(path, meta, scan_shape=raw.shape[1:3], detector_shape=raw.shape[3:5]) as group:
        group["intensity"][...] = raw
    step = np.asarray(plan.scan_step)
    return {"centre": centre, "rotation": float(rotation), "transpose": bool(transpose),
            "drift_steps": np.asarray(drift_steps, dtype=float), "drift_A": np.asarray(drift_steps) * step,
            "scan_step": tuple(step), "raw": raw, "clean": inten, "metadata": meta}

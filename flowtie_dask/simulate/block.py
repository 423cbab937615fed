"""The per-block kernel of a simulated series: :func:`simulate_block` (NumPy or CuPy), one Dask task's work.

Shot noise is seeded per scan position, so a block's patterns do not depend on how the scan is chunked.
"""

from __future__ import annotations

import numpy as np

from ..backend import asnumpy, cupy_available, get_array_module
from .multislice import poisson_noise, simulate_positions
from .planning import SimulationPlan

__all__ = ["simulate_block"]


def simulate_block(plan: SimulationPlan, xs: slice, ys: slice, *, batch_size: int | None = None):
    """Simulate one rectangular block of scan positions (the unit of work a Dask task runs).

    Parameters
    ----------
    plan : SimulationPlan
    xs, ys : slice
        Scan rows and columns of the block (step 1).
    batch_size : int, optional
        Positions per vectorised batch; default bounds the wave stack to about 32 MB.

    Returns
    -------
    intensity : ndarray, shape (3, bx, by, Qx, Qy), float32
        On the host (NumPy), noisy when the plan has a dose.
    probe_frame_phase : ndarray, shape (bx, by, Qx, Qy), float32, or None
        arg Ψ at focus, when ``plan.params.probe_frame``.
    """
    p = plan.params
    device = p.device
    if device == "auto":
        device = "gpu" if cupy_available() else "cpu"
    xp = get_array_module(device=device)
    pos = plan.positions(xs, ys)
    bx = len(range(*xs.indices(plan.scan_shape[0])))
    by = len(range(*ys.indices(plan.scan_shape[1])))
    if batch_size is None:
        batch_size = max(1, 2**22 // (plan.probes.shape[-1] * plan.probes.shape[-2]))
    inten, pf = simulate_positions(
        xp.asarray(pos),
        probes=xp.asarray(plan.probes),
        transmissions=xp.asarray(plan.transmissions),
        propagator=xp.asarray(plan.propagator),
        sampling=plan.sampling,
        detector_shape=plan.detector_shape,
        probe_frame_index=1 if p.probe_frame else None,
        batch_size=batch_size,
    )
    if p.dose:
        electrons = plan.metadata.provenance["electrons_per_pattern"]
        ix, iy = np.meshgrid(np.arange(plan.scan_shape[0])[xs], np.arange(plan.scan_shape[1])[ys], indexing="ij")
        for d in range(inten.shape[0]):
            keys = np.stack([np.full(ix.size, d), ix.ravel(), iy.ravel()], axis=1)
            inten[d] = poisson_noise(inten[d], electrons=electrons, seed=p.seed, keys=keys)
    inten = asnumpy(inten).reshape((3, bx, by) + plan.detector_shape)
    phase = None
    if pf is not None:
        phase = np.angle(asnumpy(pf)).astype(np.float32).reshape((bx, by) + plan.detector_shape)
    return inten, phase

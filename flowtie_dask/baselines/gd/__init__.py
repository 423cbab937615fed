"""Gradient-descent baseline of the paper: min_A ‖√I − |F₂D A P|‖²_F with torch autograd.

Thin-specimen (diagonal A) form. A = diag(O) with O the complex object on the object grid of
:meth:`~flowtie_dask.geometry.ReconstructionGeometry.object_grid`; the paper's dense N²×N² form is
:func:`dense_gd_reconstruct` (periodic scans up to 64×64 pixels: the Table 1 settings, where the
scan visits every pixel and P is applied by FFTs; ``--method gd-dense``). It fits
the data far better than the diagonal form (N⁴ unknowns) but through off-diagonal entries, so its
object is poor — no better than TIE, as in the paper's GD column. For every
scan position r̂ the diagonal model is

    E(q; r̂) = F_u[ O(⌊r̂⌋ + u) · P_f(u) ](q) / √(Qx·Qy),
    loss = Σ_{r̂, q} (√(I(q; r̂) + ε²) − √(|E(q; r̂)|² + ε²))² / S,      ε = 10⁻³ · rms(√I)

with u the window offsets in FFT order (u = 0 at index 0, signed in [−Q//2, Q − Q//2), wrapped modulo
the object grid when it is periodic), P_f the in-focus probe window shifted by the position's
sub-pixel fraction f exactly as :func:`flowtie_dask.projection.shifted_windows` does, and S the number
of patterns (so the loss is the mean misfit per unit-sum pattern, a fraction of the incident beam).
|E| in this window frame equals the lab-frame far-field amplitude of DESIGN §2, since the two differ by
the phase ramp e^{−2πi q·r̂} only. The ε (:data:`AMPLITUDE_EPS`) keeps the gradient defined where E = 0 —
without it the dark-field steps from the flat start followed FFT round-off and CPU and GPU runs
diverged — and leaves the exact object a zero-loss minimum; the majorisation below still holds, as
√(|E|²+ε²) is the norm of the vector (E, ε). The probe stays fixed at the metadata's probe (the paper initialises
it as the aberration-free PSF; ours carries the stored aberrations).

Parametrisation and optimiser: O is optimised **directly as a complex array** (the diagonal of the
paper's A) with **plain gradient descent** whose step is the majorise–minimise step of the amplitude loss,

    O ← O − lr · S / (2 · max_r Σ_r̂ |P(r − r̂)|²) · g,   lr = 1,

g being torch's complex gradient ∂L/∂Re O + i ∂L/∂Im O of the per-pattern mean loss L. With lr = 1 this
is the parallel error-reduction step: L is majorised at the current O by the quadratic
(1/S)·Σ_r̂ ‖P_r̂·O − ψ'_r̂‖² (ψ' the model exit wave with its far-field modulus replaced by √I), whose
curvature is at most 2·max illumination/S, so every step with 0 < lr < 2 lowers the loss — monotone
descent guaranteed without tuning and independent of scan size, detector size or dose. The guarantee
needs the loss to be majorised by a quadratic in the parameters, which holds for complex O but not for
O = exp(a + iφ); Adam needs an lr tuned to the object's phase range and does not descend monotonically.
Measured before the ε was added (32×32 scan, 32×32 detector, 0.2 Å, 300 kV, 20 mrad, focus only, noise-free single-slice
data, 100 iterations; final loss per pattern / phase MSE in rad²):

===========================  ============================  =============================
setting                      weak object (0.3 rad), start  strong object (3 rad), start
                             1.43e-3, zero-phase MSE 2.5e-3 1.36e-1, zero-phase MSE 0.25
===========================  ============================  =============================
complex, GD, lr = 1          4.8e-14 / 3.1e-13             3.1e-12 / 3.2e-11
complex, GD, lr = 1.9        2.1e-14 / 1.2e-16             1.3e-11 / 6.7e-16
exp(a + iφ), GD, lr = 1      4.8e-14 / 3.0e-13             3.4e-12 / 3.5e-11
complex, Adam, lr = 0.01     1.5e-8 / 3.2e-8 (not monot.)  1.2e-3 / 3.7e-3
complex, Adam, lr = 0.03     1.6e-8 / 2.3e-8 (not monot.)  2.9e-6 / 7.0e-6
complex, Adam, lr = 0.1      1.9e-7 / 1.5e-7 (not monot.)  1.3e-6 / 2.3e-6
exp(a + iφ), Adam, lr = 0.03 1.7e-8 / 2.0e-8 (not monot.)  4.4e-6 / 7.5e-6
===========================  ============================  =============================

Both alternatives remain available (``optimizer="adam"``, ``parametrization="phase"``).

Memory: the whole scan is held on the device (√I as float32) and every iteration is one full-gradient
step; positions are batched inside an iteration only to bound the autograd buffers. The estimate
:func:`gd_memory_estimate` is checked against :func:`available_memory` before anything is allocated.

No dask or zarr here: on a scan store the two forms run as the methods ``gd`` and ``gd-dense``
(:mod:`flowtie_dask.methods.gd`), the runner reading the scans (:func:`flowtie_dask.runner.reconstruct`).

The package: :mod:`.common` (steps, torch device, memory estimates and checks, probe spectra, the
optimiser), :mod:`.diagonal` (the diagonal form, :func:`gd_reconstruct`) and :mod:`.dense` (the dense form,
:func:`dense_gd_reconstruct`). :func:`available_memory` lives in :mod:`flowtie_dask.backend`. The public names are
importable from here; the private helpers (``_dense_run`` …) from the module that defines them.
"""

from __future__ import annotations

from .common import (
    AMPLITUDE_EPS,
    AUTOGRAD_BYTES_PER_PIXEL,
    DEFAULT_LR_ADAM,
    DEFAULT_LR_GD,
    MEMORY_HEADROOM,
    GDDivergedError,
    available_memory,
    gd_memory_estimate,
    probe_spectra,
)
from .dense import dense_gd_reconstruct
from .diagonal import gd_reconstruct

__all__ = [
    "AMPLITUDE_EPS",
    "AUTOGRAD_BYTES_PER_PIXEL",
    "DEFAULT_LR_ADAM",
    "DEFAULT_LR_GD",
    "MEMORY_HEADROOM",
    "GDDivergedError",
    "available_memory",
    "gd_memory_estimate",
    "probe_spectra",
    "gd_reconstruct",
    "dense_gd_reconstruct",
]

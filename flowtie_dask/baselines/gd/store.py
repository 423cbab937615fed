"""The gradient-descent baseline on a scan store: :func:`gd_reconstruct_store` reads the scans fitted
and returns a :class:`~flowtie_dask.results.ReconstructionResult` (diagonal or dense form).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ... import __version__
from ...geometry import ReconstructionGeometry
from ...projection import unwrap
from ...quality import check_phase
from .common import _check_dense, _check_initial, _plan_batch, _scans_used, _sqrt_fft_order, _step, _torch_device
from .dense import _dense_run
from .diagonal import _run


def gd_reconstruct_store(
    store: Any,
    *,
    iterations: int = 100,
    lr: float | None = None,
    periodic: bool | None = None,
    device: str = "cpu",
    progress: bool = True,
    use_all_defocus: bool = False,
    optimizer: str = "gd",
    parametrization: str = "complex",
    batch_size: int | None = None,
    initial=None,
    form: str = "diagonal",
    readout: str = "projection",
):
    """Gradient-descent baseline on a scan store, as a :class:`~flowtie_dask.results.ReconstructionResult`.

    Parameters
    ----------
    store : str or ScanStore
        Path of a scan store or an opened one. Only the scans fitted are read (the focus by default).
    iterations, lr, periodic, device, use_all_defocus, optimizer, parametrization, batch_size
        As :func:`gd_reconstruct`.
    initial : ReconstructionResult or ndarray, optional
        Start from this object: a result of the same scan (its exp(i·phase); e.g. ``--method flowtie``'s) or a
        complex (Nx, Ny) array on the object grid.
    progress : bool
        A tqdm bar over the iterations (shows the loss).
    form : {"diagonal", "dense"}
        ``"diagonal"``: A = diag(O), the thin-specimen object (:func:`gd_reconstruct`, any scan size).
        ``"dense"``: the paper's literal baseline, a dense A ∈ C^{N²×N²} started at the identity
        (:func:`dense_gd_reconstruct`; periodic scans whose object grid equals the detector window, at
        most 64×64, e.g. the Table 1 settings; ``initial``, ``optimizer="gd"|"adam"`` only, no batching).
        When the scan visits every object pixel once (step = pixel), P is applied by FFTs.
    readout : {"projection", "diagonal"}
        Dense form only: the object from the model's exit waves ψ = A·P projected like the TIE/FlowTIE
        ones (the paper's step A ≈ F⁻¹EPᴴ, then its diagonal over the illumination), or diag(A) itself.

    Returns
    -------
    ReconstructionResult
        ``phase`` = arg O unwrapped (rad), ``amplitude`` = |O|, ``illumination`` = Σ_r̂ |P(r − r̂)|² of the
        in-focus unit-norm probe, ``pixel_size`` = ``geometry.pixel`` (Å), ``origin`` from the object grid,
        ``attrs``: method "gd", iterations, lr, optimizer, parametrization, final_loss, losses, seconds, …

    Raises
    ------
    ValueError
        When the scan does not fit in memory (checked before the data are read).
    """
    # imported here, not at the top: importing the baseline stays free of dask and zarr
    from ...quality import bright_field_disk, read_checked
    from ...results import ReconstructionResult
    from ...store import ScanStore, open_scan_store

    start = time.perf_counter()
    if form not in ("diagonal", "dense"):
        raise ValueError(f"unknown form {form!r}: use 'diagonal' (A = diag(O)) or 'dense' (the paper's N²×N² A)")
    if readout not in ("projection", "diagonal"):
        raise ValueError(f"unknown readout {readout!r}: use 'projection' (of the exit waves A·P) or 'diagonal'")
    st = store if isinstance(store, ScanStore) else open_scan_store(store)
    geometry = ReconstructionGeometry.from_metadata(st.metadata, scan_shape=st.scan_shape,
                                                    detector_shape=st.detector_shape)
    periodic = geometry.periodic if periodic is None else bool(periodic)
    scans = _scans_used(geometry, use_all_defocus)
    if form == "dense":
        if not periodic:
            raise ValueError("the dense form needs a periodic scan (its F₂D is square only on one period): "
                             "use form='diagonal'")
        if initial is not None or parametrization != "complex" or batch_size is not None:
            raise ValueError("the dense form starts from A = I with complex entries and no batching: "
                             "leave initial, parametrization and batch_size unset")
        _check_dense(geometry, device, len(scans))
    shape, origin = geometry.object_grid(periodic=periodic)
    if initial is not None and hasattr(initial, "phase"):
        if not (np.allclose(initial.pixel_size, geometry.pixel) and np.allclose(initial.origin, origin)):
            raise ValueError(f"the initial result's grid ({initial.pixel_size} Å pixels from {initial.origin}) is not "
                             f"this scan's object grid ({geometry.pixel} Å from {origin}): start from a result of "
                             "the same scan")
        initial = np.exp(1j * np.asarray(initial.phase))
    initial = _check_initial(initial, shape)
    n_pos = st.scan_shape[0] * st.scan_shape[1]
    dev = _torch_device(device)
    batch = None if form == "dense" else _plan_batch(n_pos * len(scans), n_pos, geometry.detector_shape, shape,
                                                     device, batch_size)
    parts = []
    repairs = None
    for s in scans:
        block, report = read_checked(st.path, range(st.scan_shape[0]), range(st.scan_shape[1]), defocus=[s],
                                     bright_field=bright_field_disk(st.metadata))
        repairs = report if repairs is None else repairs.merge(report)
        block = geometry.orient(block[0])
        parts.append(_sqrt_fft_order(block.reshape((n_pos,) + tuple(geometry.detector_shape))))
        del block
    sqrt_i = np.stack(parts) if len(parts) > 1 else parts[0][None]
    del parts

    bar = None
    callback = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(iterations), desc="gradient descent", unit="it")

        def show(it, loss):
            bar.set_postfix(loss=f"{loss:.3e}", refresh=False)
            bar.update(1)

        callback = show

    try:
        if form == "dense":
            t0 = time.perf_counter()
            a, losses, ill, projected = _dense_run(sqrt_i, geometry, scans, dev=dev, iterations=iterations, lr=lr,
                                                   optimizer=optimizer, callback=callback)
            diagonal = np.diag(a).reshape(shape)
            a_off = float(np.sqrt(max(np.sum(np.abs(a) ** 2) - np.sum(np.abs(diagonal) ** 2), 0.0) / a.shape[0]))
            del a
            obj = projected if readout == "projection" else diagonal
            det = dict(illumination=ill, origin=origin, batch=None, seconds=time.perf_counter() - t0,
                       offdiagonal_rms=a_off,
                       lr=_step(lr, optimizer))
        else:
            obj, losses, det = _run(sqrt_i, geometry, scans, periodic=periodic, dev=dev, batch=batch,
                                    iterations=iterations, lr=lr, optimizer=optimizer,
                                    parametrization=parametrization, callback=callback, return_details=True,
                                    initial=initial)
    finally:
        if bar is not None:
            bar.close()
    ill = det["illumination"]
    lit = ill > 0.05 * ill.max()
    check_phase(np.angle(obj), valid=lit, what=f"the gradient-descent phase of {st.path}")
    phase = unwrap(np.angle(obj), periodic=periodic, mask=None if periodic else ~lit)
    attrs = {
        "method": "gd",
        "form": form,
        "iterations": int(iterations),
        "lr": det["lr"],
        "optimizer": optimizer,
        "parametrization": parametrization,
        "use_all_defocus": bool(use_all_defocus),
        "batch_size": det["batch"],
        "device": device,
        "final_loss": losses[-1],
        "initial_loss": losses[0],
        "initial": "given" if initial is not None else ("A = I" if form == "dense" else "O = 1"),
        "losses": [float(v) for v in losses],
        "seconds": time.perf_counter() - start,
        "seconds_optimisation": det["seconds"],
        "source": st.path,
        "flowtie_dask_version": __version__,
        "scan_metadata": {k: v for k, v in st.metadata.to_attrs().items() if k != "provenance"},
        "data_repairs": repairs.as_attrs(),
        "data_repairs_summary": repairs.summary(),
    }
    if form == "dense":  # rms of A's off-diagonal entries per row: how much of the fit is outside the object
        attrs["offdiagonal_rms"] = det["offdiagonal_rms"]
        attrs["readout"] = readout
    return ReconstructionResult(phase=phase, amplitude=np.abs(obj).astype(np.float64), illumination=ill,
                                pixel_size=geometry.pixel, origin=det["origin"], periodic=periodic, attrs=attrs)

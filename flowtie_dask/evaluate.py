"""Judging a reconstruction against the truth: resampling onto the reconstruction grid and a phase MSE
blind to a global phase offset, 2π wraps and a whole-pixel shift (DESIGN §4); the Figure-3 panel.
No dask or zarr here.
"""

from __future__ import annotations

import math

import numpy as np

from .geometry import ReconstructionGeometry
from .store import open_scan_store

__all__ = ["resample_periodic", "phase_mse", "figure_panel", "truth_of_store", "check_truth_matches",
           "evaluate_result", "SPECIMEN_KEYS"]

#: Provenance entries that identify the specimen (and so the truth) of a simulated store; noise, dose and
#: the simulator's numerics are left out, since they do not change the projected phase.
SPECIMEN_KEYS = ("material", "formula", "lattice_A", "lateral_cells", "thickness_A")


def resample_periodic(truth: np.ndarray, *, truth_pixel, truth_origin, pixel, origin, shape) -> np.ndarray:
    """Sample a periodic truth map (one period) at the pixels of another grid (cubic, wrapped).

    Parameters
    ----------
    truth : ndarray, shape (Mx, My)
        One period of the truth (e.g. the simulated supercell's projected phase), rad.
    truth_pixel, truth_origin : (float, float)
        Å; origin = position of truth pixel (0, 0) relative to the first scan position.
    pixel, origin : (float, float)
        Target grid, Å.
    shape : (Nx, Ny)
        Target grid size.

    Returns
    -------
    ndarray, shape (Nx, Ny), float64
    """
    from scipy import ndimage

    x = (origin[0] + np.arange(shape[0]) * pixel[0] - truth_origin[0]) / truth_pixel[0]
    y = (origin[1] + np.arange(shape[1]) * pixel[1] - truth_origin[1]) / truth_pixel[1]
    xx, yy = np.meshgrid(x, y, indexing="ij")
    return ndimage.map_coordinates(np.asarray(truth, dtype=np.float64), [xx, yy], order=3, mode="grid-wrap")


def _wrap(x):
    return np.angle(np.exp(1j * x))


def phase_mse(phase: np.ndarray, truth: np.ndarray, *, mask: np.ndarray | None = None, max_shift: int = 3,
              periodic: bool = False):
    """Phase MSE blind to a global offset, 2π wraps and a whole-pixel shift.

    MSE = mean over the mask of wrap(φ − φ_gt − c)², minimised over the offset c (the circular mean of the
    difference) and over shifts of φ by up to ``max_shift`` pixels (any shift for periodic maps).

    Parameters
    ----------
    phase, truth : ndarray, shape (Nx, Ny)
        rad, on the same grid.
    mask : ndarray of bool, shape (Nx, Ny), optional
        Pixels to judge (e.g. well illuminated); all by default.
    max_shift : int
    periodic : bool
        Shifts wrap around (periodic maps); otherwise shifted-out pixels are left out.

    Returns
    -------
    mse : float
        rad².
    shift : (int, int)
        Shift applied to ``phase``.
    """
    phase = np.asarray(phase, np.float64)
    truth = np.asarray(truth, np.float64)
    if phase.shape != truth.shape:
        raise ValueError(f"phase {phase.shape} and truth {truth.shape} must be on the same grid")
    mask = np.ones(phase.shape, bool) if mask is None else np.asarray(mask, bool)
    nx, ny = phase.shape
    if periodic:
        shifts = [(a, b) for a in range(-(nx // 2), nx - nx // 2) for b in range(-(ny // 2), ny - ny // 2)]
        # rank shifts by the circular cross-correlation of exp(iφ) and exp(iφ_gt), then score the best few
        xc = np.fft.ifft2(np.fft.fft2(np.exp(1j * phase) * mask) * np.conj(np.fft.fft2(np.exp(1j * truth) * mask)))
        order = np.argsort(-np.abs(xc).ravel())[:9]
        shifts = [(-(int(i) if i < nx - nx // 2 else int(i) - nx), -(int(j) if j < ny - ny // 2 else int(j) - ny))
                  for i, j in zip(*np.unravel_index(order, xc.shape))]
    else:
        shifts = [(a, b) for a in range(-max_shift, max_shift + 1) for b in range(-max_shift, max_shift + 1)]
    best = (math.inf, (0, 0))
    for a, b in shifts:
        if periodic:
            p, m = np.roll(phase, (a, b), axis=(0, 1)), mask
        else:
            p = np.roll(phase, (a, b), axis=(0, 1))
            m = mask.copy()
            if a > 0:
                m[:a] = False
            elif a < 0:
                m[a:] = False
            if b > 0:
                m[:, :b] = False
            elif b < 0:
                m[:, b:] = False
        d = _wrap(p - truth)[m]
        if d.size == 0:
            continue
        c = np.angle(np.mean(np.exp(1j * d)))
        mse = float(np.mean(_wrap(d - c) ** 2))
        if mse < best[0]:
            best = (mse, (a, b))
    return best[0], best[1]


def figure_panel(panels: dict, path: str, *, title: str = "", extent=None, gradient: tuple | None = None) -> str:
    """A Figure-3-style row of phase maps on a common colour scale (truth | TIE | … ).

    Parameters
    ----------
    panels : dict of str → ndarray (Nx, Ny)
        Phase maps in rad, all on one grid (offsets removed by the caller).
    path : str
        PNG to write.
    extent : list of 4 floats, optional
        Å.
    gradient : (name, gx, gy) tuples, optional
        Vector fields to draw as quiver panels before the phase maps.

    Returns
    -------
    str
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    items = list(panels.items())
    extra = list(gradient or [])
    n = len(items) + len(extra)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.6), squeeze=False)
    axes = axes[0]
    for ax, (name, gx, gy) in zip(axes, extra):
        step = max(1, gx.shape[0] // 24)
        ax.quiver(gx[::step, ::step].T, gy[::step, ::step].T, angles="xy")
        ax.set_title(name)
        ax.set_aspect("equal")
    vals = np.concatenate([np.ravel(v) for _, v in items])
    lo, hi = np.percentile(vals, [0.5, 99.5])
    for ax, (name, data) in zip(axes[len(extra):], items):
        im = ax.imshow(np.asarray(data).T, origin="lower", cmap="viridis", vmin=lo, vmax=hi, extent=extent)
        ax.set_title(name)
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="phase (rad)")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def truth_of_store(store):
    """The projected-phase truth of a simulated (or annotated) scan store.

    Returns
    -------
    truth : ndarray, shape (Mx, My), rad
    pixel : (float, float), Å
    origin : (float, float), Å relative to the first scan position
    """
    st = store if hasattr(store, "truth") else open_scan_store(store)
    if st.truth is None:
        raise ValueError(f"{st.path!r} has no truth/ group: evaluate needs a simulated store (or one with truth)")
    pp = st.truth["projected_phase"]
    return np.asarray(pp[:], np.float64), tuple(pp.attrs["pixel_size_A"]), tuple(pp.attrs["origin_A"])


def _extent(shape, pixel) -> tuple[float, float]:
    return float(shape[0]) * float(pixel[0]), float(shape[1]) * float(pixel[1])


def _same(a, b, rel: float) -> bool:
    """Numbers or equal-length lists of numbers equal to ``rel`` (relative); anything else compared as is."""
    try:
        av = np.atleast_1d(np.asarray(a, dtype=np.float64))
        bv = np.atleast_1d(np.asarray(b, dtype=np.float64))
    except (TypeError, ValueError):
        return a == b
    return av.shape == bv.shape and bool(np.allclose(av, bv, rtol=rel, atol=0.0))


def _fmt(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def check_truth_matches(result, truth_store, *, tolerance: float = 0.03) -> None:
    """Refuse a truth that is not of the result's scan: another field of view, optics or specimen.

    Checked, each when both sides record it:

    * the field of view: the result's phase grid (shape × pixel size) against the object grid the truth
      store's scan gives (for a periodic result, one scan period, which is what a simulated truth covers),
      to ``tolerance`` (relative) plus one pixel;
    * the result's ``scan_metadata`` (energy, scan step, scan shape) against the truth store's;
    * the specimen: when the result's ``source`` store still exists and is another store, its provenance
      (:data:`SPECIMEN_KEYS`: material, formula, lattice, cells, thickness) against the truth store's.

    Parameters
    ----------
    result : ReconstructionResult
    truth_store : str or ScanStore

    Raises
    ------
    ValueError
        One line saying what differs and naming the result's source store.
    """
    import os

    st = truth_store if hasattr(truth_store, "truth") else open_scan_store(truth_store)
    attrs = dict(getattr(result, "attrs", None) or {})
    source = attrs.get("source")
    fix = ("give the store the result was reconstructed from" +
           (f" (its source is {source!r})" if source else ""))

    # field of view
    shape = np.shape(result.phase)
    got = _extent(shape, result.pixel_size)
    want, pixel = None, None
    window = attrs.get("scan_window")  # a result of the common area of drifted scans covers that window only
    scan_shape = tuple(st.scan_shape) if not window else tuple(int(b) - int(a) for a, b in window)
    try:
        geo = ReconstructionGeometry.from_metadata(st.metadata, scan_shape=scan_shape,
                                                   detector_shape=st.detector_shape)
        grid, _ = geo.object_grid(periodic=bool(result.periodic))
        want, pixel = _extent(grid, geo.pixel), geo.pixel
    except ValueError:  # the scan period is not a whole number of pixels: compare with the scan itself
        if result.periodic:
            want = _extent(scan_shape, st.metadata.scan_step)
            pixel = result.pixel_size
    if attrs.get("grid") == "scan":  # a result on the scan grid (iCoM): its field of view is the scan's
        step = tuple(float(v) for v in st.metadata.scan_step)
        want, pixel = _extent(scan_shape, step), step
    if want is not None:
        for w, g, px, rp in zip(want, got, pixel, result.pixel_size):
            if abs(w - g) > tolerance * w + max(float(px), float(rp)):
                what = ("the truth covers" if result.periodic else
                        "the truth store's scan gives a non-periodic object of")
                raise ValueError(f"{st.path!r} is not the truth of this result: {what} {want[0]:.1f} × {want[1]:.1f} "
                                 f"Å, the result {got[0]:.1f} × {got[1]:.1f} Å: {fix}")

    # optics and sampling the result recorded
    theirs = st.metadata.to_attrs()
    mine = dict(attrs.get("scan_metadata") or {})
    if "scan_shape" in attrs:
        mine.setdefault("scan_shape", attrs["scan_shape"])
    theirs["scan_shape"] = list(st.scan_shape)
    for key, label, unit in (("energy_eV", "energy", "eV"), ("scan_step_A", "scan step", "Å"),
                             ("scan_shape", "scan shape", "positions")):
        if key in mine and key in theirs and not _same(mine[key], theirs[key], 1e-6):
            raise ValueError(f"{st.path!r} is not the truth of this result: its {label} is {_fmt(theirs[key])} {unit}, "
                             f"the result's scan had {_fmt(mine[key])} {unit}: {fix}")

    # the specimen, from the provenance of the result's source store
    if source and os.path.exists(source) and os.path.realpath(source) != os.path.realpath(st.path):
        try:
            src = open_scan_store(source)
        except ValueError:
            return  # the source is gone or changed: nothing more to compare
        a, b = src.metadata.provenance or {}, st.metadata.provenance or {}
        for key in SPECIMEN_KEYS:
            if key in a and key in b and not _same(a[key], b[key], 1e-6):
                raise ValueError(f"{st.path!r} is not the truth of this result: its specimen has {key} = "
                                 f"{_fmt(b[key])}, the result's source {source!r} has {_fmt(a[key])}: {fix}")


def evaluate_result(result, truth_store, *, lit_fraction: float = 0.5):
    """Phase MSE of a reconstruction against a store's truth.

    The truth (one period of the simulated cell) is resampled onto the reconstruction grid; the MSE is
    taken over pixels whose illumination exceeds ``lit_fraction`` of its maximum (all pixels of a
    periodic result), blind to offset, wraps and a whole-pixel shift.

    Parameters
    ----------
    result, truth_store : ReconstructionResult, str or ScanStore
        As in :func:`check_truth_matches`.
    lit_fraction : float
        Of a non-periodic result, the pixels lit above this fraction of the maximum illumination are compared.

    Raises
    ------
    ValueError
        The store has no truth, or its truth is not of the result's scan (:func:`check_truth_matches`).

    Returns
    -------
    dict
        ``mse`` (rad²), ``truth_variance`` (rad², over the same pixels), ``shift`` (pixels),
        ``truth_on_grid`` (ndarray), ``aligned`` (the reconstruction shifted and offset onto the truth),
        ``mask``.
    """
    st = truth_store if hasattr(truth_store, "truth") else open_scan_store(truth_store)
    truth, tpix, torig = truth_of_store(st)
    check_truth_matches(result, st)
    t = resample_periodic(truth, truth_pixel=tpix, truth_origin=torig, pixel=result.pixel_size,
                          origin=result.origin, shape=result.phase.shape)
    mask = None if result.periodic else result.illumination > lit_fraction * result.illumination.max()
    mse, shift = phase_mse(result.phase, t, mask=mask, periodic=result.periodic)
    m = np.ones(t.shape, bool) if mask is None else mask
    aligned = np.roll(result.phase, shift, axis=(0, 1))
    c = np.angle(np.mean(np.exp(1j * (aligned - t)[m])))
    aligned = t + _wrap(aligned - t - c)
    return {"mse": mse, "truth_variance": float(np.var(t[m])), "shift": shift, "truth_on_grid": t,
            "aligned": aligned, "mask": m}

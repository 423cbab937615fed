"""What a user gets today from py4DSTEM on the focus scan of the experiment-like series, py4DSTEM finding the
beam centre and the detector rotation itself, scored as flowtie-dask scores its own methods.

Run:  python benchmarks/experiment_like.py --out DIR --methods icom      (imports DIR/spoiled.zarr with its truth)
      python benchmarks/experiment_like_py4dstem.py --out DIR [--data ../shared/data/experiment_like/si_300kV]
                                                    [--iterations 20] [--batch 64]

The focus scan (scan_focus.h5, uint16 frames) becomes a py4DSTEM 0.14 DataCube calibrated from microscope.json
only (R: 0.1697 Å, Q: the detector's mrad per pixel as 1/Å at 300 kV). Nothing about the spoiling is given:

* centre: ``get_probe_size`` of the mean pattern (py4DSTEM's disk finder), and the plane py4DSTEM's phase
  classes fit to the per-position centre of mass (what their ``preprocess`` actually uses);
* rotation and transpose: the phase classes' own curl minimisation (``force_com_rotation`` not given).

Then ``DPC`` (its default 64 iterations, no filters) and ``SingleslicePtychography`` (gradient descent,
20 iterations by default, 20 mrad, Δf = 0, defaults otherwise; ``--batch`` adds a run with mini-batches).
Each phase is wrapped as a ReconstructionResult and scored by ``flowtie_dask.evaluate.evaluate_result``
against DIR/spoiled.zarr's truth (blind to an offset, 2π wraps and a whole-pixel shift):

* DPC: its phase on the scan grid (``grid: scan``, pixel = scan step, origin = first position, every pixel
  compared, as for our iCoM). Its phase is in py4DSTEM's own units, so it is also scored after the
  least-squares scale to the truth (``scaled``), as in benchmarks/icom_vs_py4dstem_dpc.py.
* ptychography, ``object grid``: py4DSTEM keeps the object in the detector's frame (it rotates the probe
  positions, not the patterns). The complex object is resampled (cubic) onto flowtie-dask's non-periodic
  object grid in the scan frame (scan + one window, pixel 1/(64·Δq), origin −32 px from the first position)
  through the affine map that takes each scan position (Å) to py4DSTEM's probe position (object pixels),
  fitted on all 1600 positions; the illumination is py4DSTEM's own Σ|P(r − r̂)|² with its final probe
  resampled the same way, so the comparison is over the pixels lit above half the maximum, as for ours.
* ptychography, ``object_cropped``: py4DSTEM's own rotated and cropped object (the scanned region, about the
  scan grid), scored on the scan grid (every pixel), origin from py4DSTEM's crop relative to the first
  probe position.

spoil.json (the truth of the spoiling) is printed beside what py4DSTEM found; it is never an input.
"""

import argparse
import contextlib
import io
import json
import math
import os
import time
import warnings

import numpy as np

os.environ.setdefault("CUPY_PYLOPS", "0")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

from flowtie_dask.evaluate import evaluate_result  # noqa: E402
from flowtie_dask.geometry import ReconstructionGeometry  # noqa: E402
from flowtie_dask.physics.constants import wavelength  # noqa: E402
from flowtie_dask.results import ReconstructionResult  # noqa: E402
from flowtie_dask.store import open_scan_store  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def frames(path):
    import h5py
    import hdf5plugin  # noqa: F401 - registers bitshuffle-LZ4 with h5py

    with h5py.File(path, "r") as f:
        return np.asarray(f["entry/data/data"])


def scores(result, store):
    """evaluate_result's MSE, and the MSE after the least-squares scale of the aligned phase to the truth."""
    ev = evaluate_result(result, store)
    m = ev["mask"]
    truth = ev["truth_on_grid"][m] - ev["truth_on_grid"][m].mean()
    aligned = ev["aligned"][m] - ev["aligned"][m].mean()
    scale = float(np.sum(aligned * truth) / np.sum(aligned * aligned))
    return ev, float(np.mean((scale * aligned - truth) ** 2)), scale


def quiet():
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    return stack


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "experiment_like",
                                                       "si_300kV"))
    parser.add_argument("--out", default="experiment_like_data",
                        help="folder of benchmarks/experiment_like.py (its spoiled.zarr holds the truth)")
    parser.add_argument("--iterations", type=int, default=20, help="ptychography iterations")
    parser.add_argument("--batch", type=int, default=None,
                        help="also run the ptychography with mini-batches of this many patterns")
    args = parser.parse_args()
    data = os.path.abspath(args.data)
    store = os.path.join(args.out, "spoiled.zarr")
    if not os.path.exists(store):
        raise SystemExit(f"{store} missing: run python benchmarks/experiment_like.py --out {args.out} "
                         "--methods icom first")
    st = open_scan_store(store)
    mic = json.load(open(os.path.join(data, "microscope.json")))
    spoil = json.load(open(os.path.join(data, "spoil.json")))

    energy = float(mic["high_tension_kV"]) * 1e3
    semiangle = float(mic["convergence_semiangle_mrad"])
    step = 10.0 * float(mic["scan_step_nm_nominal"])  # Å
    rx, ry = mic["scan_shape"]
    dq = float(mic["detector_mrad_per_pixel"]) * 1e-3 / wavelength(energy)  # 1/Å
    focus = int(np.argmin(np.abs(np.asarray(mic["defocus_nm_nominal"]))))
    assert mic["files"]["focus"] == "scan_focus.h5" and mic["defocus_nm_nominal"][focus] == 0.0

    t_read = time.perf_counter()
    raw = frames(os.path.join(data, mic["files"]["focus"]))
    q = raw.shape[-1]
    cube_data = raw.reshape(rx, ry, raw.shape[-2], q).astype(np.float32)
    t_read = time.perf_counter() - t_read

    with quiet():
        import py4DSTEM
        from py4DSTEM.process.calibration import get_probe_size
    print(f"py4DSTEM {py4DSTEM.__version__}; focus scan {raw.shape} {raw.dtype} read in {t_read:.1f} s; "
          f"R {step:.4f} Å, Q {dq:.6f} 1/Å ({mic['detector_mrad_per_pixel']:.4f} mrad/px)", flush=True)

    def datacube():
        cube = py4DSTEM.DataCube(data=cube_data.copy())
        cube.calibration.set_R_pixel_size(step)
        cube.calibration.set_R_pixel_units("A")
        cube.calibration.set_Q_pixel_size(dq)
        cube.calibration.set_Q_pixel_units("A^-1")
        return cube

    # ---- the truth of the spoiling, in py4DSTEM's terms -------------------------------------------------
    # spoil.json: a detector feature at p (about N//2) was moved to R(θ)·p + offset. py4DSTEM's phase classes
    # rotate the measured CoM by R(φ) into the scan frame, so φ = −θ undoes it (the store's detector_rotation).
    # The beam: the clean twin's own disk centre (31.75: 2×2 binning of a 128 grid) moved the same way.
    import h5py

    from flowtie_dask.calibrate import fit_bright_field_disk

    with h5py.File(os.path.join(data, "clean_series.h5"), "r") as f:
        clean = np.asarray(fit_bright_field_disk(np.asarray(f["focus"], dtype=np.float64).mean(axis=0)).centre)
    th = math.radians(spoil["rotation_deg"])
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    true_centre = q // 2 + rot @ (clean - q // 2) + np.asarray(spoil["beam_offset_px"])
    true_rotation = -spoil["rotation_deg"]

    # ---- centre: py4DSTEM's disk finder on the mean pattern ----------------------------------------------
    with quiet():
        cube = datacube()
        dp_mean = np.asarray(cube.get_dp_mean().data)
        r_probe, x0, y0 = get_probe_size(dp_mean)
    print(f"truth of the spoiling (never an input): {spoil}")
    print(f"  → in py4DSTEM's terms: rotation {true_rotation:+.1f}°, transpose False, beam centre "
          f"({true_centre[0]:.2f}, {true_centre[1]:.2f}) px (the clean twin's ({clean[0]:.2f}, {clean[1]:.2f}) moved)")
    print(f"py4DSTEM get_probe_size(mean pattern): centre ({x0:.2f}, {y0:.2f}) px, radius {r_probe:.2f} px "
          f"({r_probe * float(mic['detector_mrad_per_pixel']):.2f} mrad; nominal {semiangle:g})")

    rows = []

    # ---- DPC -------------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    with quiet():
        dpc = py4DSTEM.process.phase.DPC(datacube=datacube(), energy=energy, verbose=False, device="cpu")
        dpc.preprocess(plot_center_of_mass=None, plot_rotation=False)
        dpc.reconstruct(progress_bar=False, gaussian_filter=False, butterworth_filter=False)
    t_dpc = time.perf_counter() - t0
    c_dpc = (float(np.mean(dpc._com_fitted_x)), float(np.mean(dpc._com_fitted_y)))
    print(f"DPC found: rotation {math.degrees(dpc._rotation_best_rad):+.1f}°, transpose "
          f"{bool(dpc._rotation_best_transpose)}, centre (mean of its CoM plane fit) ({c_dpc[0]:.2f}, "
          f"{c_dpc[1]:.2f}) px; {len(dpc.error_iterations)} iterations", flush=True)
    phase = np.asarray(dpc.object_phase, dtype=np.float64)
    assert phase.shape == (rx, ry), phase.shape
    meta = {"energy_eV": energy, "scan_step_A": [step, step], "scan_shape": [rx, ry]}
    res = ReconstructionResult(phase=phase, amplitude=np.ones_like(phase), illumination=np.ones_like(phase),
                               pixel_size=(step, step), origin=(0.0, 0.0), periodic=False,
                               attrs={"grid": "scan", "source": store, "scan_metadata": meta,
                                      "method": "py4DSTEM DPC"})
    ev, scaled, scale = scores(res, store)
    rows.append(("DPC (scan grid)", ev, scaled, scale, t_dpc))

    # ---- single-slice ptychography -------------------------------------------------------------------------
    geo = ReconstructionGeometry.from_metadata(st.metadata, scan_shape=st.scan_shape,
                                               detector_shape=st.detector_shape)
    grid, grid_origin = geo.object_grid(periodic=False)
    from scipy import ndimage

    from py4DSTEM.process.phase.utils import fft_shift

    runs = [("ptycho", None)] + ([(f"ptycho b{args.batch}", args.batch)] if args.batch else [])
    for label, batch in runs:
        t0 = time.perf_counter()
        with quiet():
            ptycho = py4DSTEM.process.phase.SingleslicePtychography(
                energy=energy, datacube=datacube(), semiangle_cutoff=semiangle, defocus=0.0, device="cpu",
                verbose=False)
            ptycho.preprocess(plot_center_of_mass=None, plot_rotation=False, plot_probe_overlaps=False)
            ptycho.reconstruct(num_iter=args.iterations, max_batch_size=batch, progress_bar=False, seed_random=0)
        t_pty = time.perf_counter() - t0
        c_pty = (float(np.mean(ptycho._com_fitted_x)), float(np.mean(ptycho._com_fitted_y)))
        pixel = tuple(float(s) for s in ptycho.sampling)
        obj = np.asarray(ptycho._object)
        pos = np.asarray(ptycho._positions_px, dtype=np.float64)  # probe centre, object pixels
        print(f"{label} found: rotation {math.degrees(ptycho._rotation_best_rad):+.1f}°, transpose "
              f"{bool(ptycho._rotation_best_transpose)}, centre (mean of its CoM plane fit) ({c_pty[0]:.2f}, "
              f"{c_pty[1]:.2f}) px; object {obj.shape} of {pixel[0]:.5f} Å (1/(64·Δq) = {1 / (q * dq):.5f}); "
              f"error {ptycho.error:.4g}", flush=True)
        assert np.allclose(pixel, geo.pixel, rtol=1e-4), (pixel, geo.pixel)

        # scan position (Å, scan frame, relative to the first) → py4DSTEM object pixel: affine, fitted
        ix, iy = np.meshgrid(np.arange(rx), np.arange(ry), indexing="ij")
        r = np.stack([ix.ravel() * step, iy.ravel() * step, np.ones(rx * ry)], axis=1)
        coef, *_ = np.linalg.lstsq(r, pos, rcond=None)
        resid = float(np.abs(r @ coef - pos).max())
        gx, gy = np.meshgrid(grid_origin[0] + np.arange(grid[0]) * geo.pixel[0],
                             grid_origin[1] + np.arange(grid[1]) * geo.pixel[1], indexing="ij")
        where = np.stack([gx.ravel(), gy.ravel(), np.ones(gx.size)], axis=1) @ coef
        coords = [where[:, 0].reshape(grid), where[:, 1].reshape(grid)]
        o = (ndimage.map_coordinates(obj.real, coords, order=3, cval=1.0)
             + 1j * ndimage.map_coordinates(obj.imag, coords, order=3, cval=0.0))
        # py4DSTEM's Σ|P(r − r̂)|² with its final probe, as its preprocess computes it
        probe = np.asarray(ptycho._probe)
        frac = pos - np.round(pos)
        overlap = np.asarray(ptycho._sum_overlapping_patches_bincounts(
            np.abs(fft_shift(probe, frac, np)) ** 2, pos), dtype=np.float64)
        illum = np.clip(ndimage.map_coordinates(overlap, coords, order=1, cval=0.0), 0.0, None)
        res = ReconstructionResult(phase=np.angle(o), amplitude=np.abs(o), illumination=illum,
                                   pixel_size=tuple(geo.pixel), origin=tuple(grid_origin), periodic=False,
                                   attrs={"grid": "object", "source": store, "scan_metadata": meta,
                                          "method": "py4DSTEM SingleslicePtychography",
                                          "affine_residual_px": resid})
        ev, scaled, scale = scores(res, store)
        rows.append((f"{label} (object grid)", ev, scaled, scale, t_pty))

        # py4DSTEM's own object_cropped: rotated back into the scan frame and cropped to the positions
        cropped = np.asarray(ptycho.object_cropped)
        angle = (ptycho._rotation_best_rad if ptycho._rotation_best_transpose else -ptycho._rotation_best_rad)
        from py4DSTEM.process.phase.utils import AffineTransform

        rp = AffineTransform(angle=angle)(pos, origin=pos.mean(0), xp=np)
        lo = np.maximum(np.floor(rp.min(axis=0)).astype(int), 0)
        corner = (lo - rp[0]) * np.asarray(pixel)  # crop pixel (0, 0) relative to the first probe position
        if ptycho._rotation_best_transpose:
            corner = corner[::-1]
        ph = np.angle(cropped).astype(np.float64)
        res = ReconstructionResult(phase=ph, amplitude=np.abs(cropped), illumination=np.ones_like(ph),
                                   pixel_size=pixel, origin=(float(corner[0]), float(corner[1])), periodic=False,
                                   attrs={"grid": "scan", "source": store, "scan_metadata": meta,
                                          "method": "py4DSTEM SingleslicePtychography object_cropped"})
        try:
            ev, scaled, scale = scores(res, store)
            rows.append((f"{label} (object_cropped {ph.shape[0]}×{ph.shape[1]})", ev, scaled, scale, t_pty))
        except ValueError as exc:
            print(f"  object_cropped {ph.shape} not scored: {exc}")

    print(f"\n{'py4DSTEM on the focus scan':40s} {'truth var':>9s} {'MSE':>9s} {'scaled':>9s} {'scale':>7s} "
          f"{'shift':>8s} {'px':>6s} {'wall s':>7s}   (MSE rad²)")
    for name, ev, scaled, scale, t in rows:
        print(f"{name:40s} {ev['truth_variance']:9.5f} {ev['mse']:9.5f} {scaled:9.5f} {scale:7.3f} "
              f"{str(tuple(int(v) for v in ev['shift'])):>8s} {int(ev['mask'].sum()):6d} {t:7.1f}")


if __name__ == "__main__":
    main()

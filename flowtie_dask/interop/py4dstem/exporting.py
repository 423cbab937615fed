"""Scan stores and reconstruction results out to py4DSTEM: DataCubes, ``.h5`` files, and the NaN checks before writing.

:func:`store_to_datacubes`, :func:`export_store` (three calibrated DataCube files), :func:`export_result`
(a RealSlice file) and :func:`is_scan_store`. Nothing is written when the source holds a NaN or Inf.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings

import numpy as np

from ... import __version__
from ...atomic import atomic_path, check_output
from ...pairs import pair
from ...physics import DEFOCUS_CONVENTION
from ...store import INTENSITY_NORMALIZATION, SCHEMA, intensity_scale, open_scan_store
from .common import DATACUBE_RECORD_SCHEMA, RECORD_NAME, RESULT_RECORD_SCHEMA, _json_safe, _py4dstem


def _count_non_finite(arr) -> tuple[int, tuple | None]:
    """Non-finite values of a (Zarr or NumPy) array, read one storage chunk block at a time.

    Returns
    -------
    count : int
    first : tuple of int or None
        Index of the first one found.
    """
    import itertools

    shape = tuple(arr.shape)
    if not shape:
        v = np.asarray(arr[()])
        return (0, None) if np.isfinite(v) else (1, ())
    if np.dtype(arr.dtype).kind not in "fc":
        return 0, None
    chunks = tuple(getattr(arr, "chunks", None) or shape)
    # whole chunks along the leading axes, the trailing axes (e.g. a detector pattern) whole
    ranges = [range(0, n, max(1, c)) for n, c in zip(shape, chunks)]
    count, first = 0, None
    for start in itertools.product(*ranges):
        sl = tuple(slice(a, min(a + c, n)) for a, c, n in zip(start, chunks, shape))
        bad = ~np.isfinite(np.asarray(arr[sl]))
        n_bad = int(bad.sum())
        if n_bad:
            if first is None:
                first = tuple(int(a + i[0]) for a, i in zip(start, np.nonzero(bad)))
            count += n_bad
    return count, first


def _check_out_file(out, overwrite: bool, what: str = "output") -> str:
    out = os.path.abspath(os.fspath(out))
    if os.path.isdir(out):
        raise ValueError(f"{out!r} is a folder; give a file name for the {what}")
    return check_output(out, overwrite=overwrite)


def _square(values, what: str, path: str) -> float:
    a, b = (float(v) for v in values)
    if not math.isclose(a, b, rel_tol=1e-9):
        raise ValueError(f"{path}: {what} ({a:g}, {b:g}) differs between the axes; py4DSTEM calibrations "
                         "hold one pixel size for both")
    return a


def _datacube_from_store(store, index: int):
    """DataCube ``index`` of an opened scan store, calibrated and carrying the ``flowtie_dask`` record."""
    py4DSTEM = _py4dstem()
    from emdfile import Metadata

    m = store.metadata
    step = _square(m.scan_step, "the scan step", store.path)
    dq = _square(m.detector_sampling, "the detector sampling", store.path)
    data = np.asarray(store.intensity[index])
    scale = intensity_scale(store.intensity)
    if scale is not None:  # a store of counts: its normalised values, as the record says
        data = data.astype(np.float32) * np.float32(scale[index])
    cube = py4DSTEM.DataCube(data=data, name=f"defocus_{index}")
    cal = cube.calibration
    cal.set_R_pixel_size(step)
    cal.set_R_pixel_units("A")
    cal.set_Q_pixel_size(dq)
    cal.set_Q_pixel_units("A^-1")
    cal.set_origin(tuple(float(v) for v in m.detector_center))
    cal.set_QR_rotation_degrees(float(m.detector_rotation))
    cal.set_QR_flip(bool(m.detector_transpose))
    rec = Metadata(name=RECORD_NAME)
    values = {
        "schema": DATACUBE_RECORD_SCHEMA,
        "schema_version": 1,
        "source_store": os.path.abspath(store.path),
        "defocus_index": index,
        "defocus_A": float(m.defocus[index]),
        "defocus_series_A": [float(d) for d in m.defocus],
        "defocus_convention": DEFOCUS_CONVENTION,
        "energy_eV": float(m.energy),
        "semiangle_mrad": float(m.semiangle),
        "aperture_edge_mrad": float(m.aperture_edge),
        "aberrations_A": {k: float(v) for k, v in m.aberrations.items()},
        "scan_step_A": [float(v) for v in m.scan_step],
        "scan_origin_A": [float(v) for v in m.scan_origin],
        "detector_sampling_invA": [float(v) for v in m.detector_sampling],
        "detector_center_px": [float(v) for v in m.detector_center],
        "detector_rotation_deg": float(m.detector_rotation),
        "detector_transpose": bool(m.detector_transpose),
        "periodic": bool(m.periodic),
        "intensity_normalization": INTENSITY_NORMALIZATION,
    }
    for k, v in values.items():
        rec[k] = v
    cube.metadata = rec
    return cube


def store_to_datacubes(store_path) -> list:
    """The three scans of a scan store as calibrated py4DSTEM DataCubes (in memory).

    Parameters
    ----------
    store_path : str or PathLike
        A scan store (``flowtie-dask simulate``/``import``).

    Returns
    -------
    list of 3 py4DSTEM.DataCube
        Each (Rx, Ry, Qx, Qy) float32 in the store's normalisation, in the order of the store's
        defocus values; calibration R_pixel_size = scan step (``A``), Q_pixel_size = detector
        sampling (``A^-1``), origin = detector centre (pixels), QR_rotation_degrees/QR_flip = the
        detector rotation/transpose; a ``flowtie_dask`` Metadata holds the optics and defocus (Å).
        The whole store is loaded: use :func:`export_store` for large scans.

    Raises
    ------
    ValueError
        The store is invalid, or its scan step or detector sampling differs between the axes (py4DSTEM
        holds one pixel size).
    """
    store = open_scan_store(store_path)
    return [_datacube_from_store(store, i) for i in range(3)]


def export_store(store_path, out_prefix, *, overwrite=False) -> list[str]:
    """Write a scan store as three py4DSTEM files ``<out_prefix>_defocus_{0,1,2}.h5``.

    One scan is held in memory at a time. All three files are written under temporary names and
    renamed only when all succeeded, so a failure leaves no partial file.

    Parameters
    ----------
    store_path : str or PathLike
        A scan store, intensity (3, Rx, Ry, Qx, Qy).
    out_prefix : str or PathLike
        Path prefix of the files (its folder must exist).
    overwrite : bool
        Replace existing files.

    Returns
    -------
    list of 3 str
        Absolute paths, in the order of the store's defocus values (Δf in Å in each file's
        ``flowtie_dask`` Metadata; calibration as in :func:`store_to_datacubes`).

    Raises
    ------
    ValueError
        Invalid store, existing files without ``overwrite``, missing output folder, non-square pixels.
    """
    py4DSTEM = _py4dstem()
    store = open_scan_store(store_path)
    prefix = os.path.abspath(os.fspath(out_prefix))
    for suffix in (".h5", ".hdf5", ".emd"):
        if prefix.lower().endswith(suffix):
            prefix = prefix[: -len(suffix)]
    outs = [_check_out_file(f"{prefix}_defocus_{i}.h5", overwrite, "exported DataCube") for i in range(3)]
    _square(store.metadata.scan_step, "the scan step", store.path)
    _square(store.metadata.detector_sampling, "the detector sampling", store.path)
    bad, first = _count_non_finite(store.intensity)  # chunk by chunk, before any file is opened
    if bad:
        what = "intensities" if bad > 1 else "intensity"
        raise ValueError(f"{store.path!r} contains {bad} non-finite {what} (NaN or Inf; the first at defocus "
                         f"{first[0]}, scan position ({first[1]}, {first[2]})): fix or re-import the store; "
                         "nothing was exported")
    with contextlib.ExitStack() as stack:  # all three appear together, or none
        temps = [stack.enter_context(atomic_path(o, overwrite=overwrite)) for o in outs]
        for i, tmp in enumerate(temps):
            cube = _datacube_from_store(store, i)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                py4DSTEM.save(tmp, cube, mode="w")
            del cube
    return outs


def export_result(result_path, out, *, overwrite=False) -> str:
    """Write a reconstruction result as a py4DSTEM file holding a calibrated RealSlice.

    Parameters
    ----------
    result_path : str or PathLike
        Zarr group with a 2D float array ``phase`` (Nx, Ny) in rad, attributes ``pixel_size_A``
        ([dx, dy], Å) and ``origin_A`` ([x0, y0], Å; default [0, 0]) on the group (or on ``phase``),
        and optionally ``amplitude`` (Nx, Ny).
    out : str or PathLike
        Destination ``.h5`` file; written under a temporary name and renamed when complete.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    str
        Absolute path of the file. ``py4DSTEM.read(path)`` gives a RealSlice ``phase`` (Nx, Ny) in rad
        with ``calibration.R_pixel_size`` = dx and ``R_pixel_units`` = ``A``; the amplitude, when present,
        is a RealSlice ``amplitude`` in its tree (``.tree('amplitude')``); a ``flowtie_dask`` Metadata
        holds pixel_size_A, origin_A, units and the result group's attributes (as JSON).

    Raises
    ------
    ValueError
        Missing or malformed result, existing ``out`` without ``overwrite``, missing output folder.
    """
    import zarr

    path = os.fspath(result_path)
    if not os.path.exists(path):
        raise ValueError(f"result {path!r} does not exist")
    try:
        group = zarr.open_group(path, mode="r")
    except Exception:
        meta = os.path.join(path, "zarr.json")
        if os.path.isfile(meta):  # a damaged metadata file: say which and where
            try:
                with open(meta, encoding="utf-8", errors="replace") as f:
                    json.loads(f.read())
            except json.JSONDecodeError as exc:
                raise ValueError(f"{meta!r} is not valid JSON (line {exc.lineno} column {exc.colno}): {exc.msg}; "
                                 "the group is damaged: re-create it (reconstruct or import again)") from None
        raise ValueError(f"{path!r} is not a Zarr group; give the result folder written by "
                         "'flowtie-dask reconstruct'") from None
    if "phase" not in group:
        raise ValueError(f"{path!r} has no 'phase' array; give a reconstruction result")
    phase_arr = group["phase"]
    if not hasattr(phase_arr, "ndim") or phase_arr.ndim != 2 or np.dtype(phase_arr.dtype).kind != "f":
        raise ValueError(f"{path!r}: 'phase' must be a 2D float array, got {getattr(phase_arr, 'shape', None)} "
                         f"{getattr(phase_arr, 'dtype', None)}")
    attrs = dict(group.attrs)
    parr_attrs = dict(phase_arr.attrs)
    pixel = attrs.get("pixel_size_A", parr_attrs.get("pixel_size_A"))
    if pixel is None:
        raise ValueError(f"{path!r} has no 'pixel_size_A' attribute ([dx, dy] in Å)")
    dx, dy = pair(pixel, name="pixel_size_A", finite=True)
    if not (dx > 0 and dy > 0):
        raise ValueError(f"{path!r}: pixel_size_A must be positive Å, got {pixel!r}")
    origin = pair(attrs.get("origin_A", parr_attrs.get("origin_A", (0.0, 0.0))), name="origin_A", finite=True)
    phase = np.asarray(phase_arr[...])
    amplitude = None
    if "amplitude" in group:
        amplitude = np.asarray(group["amplitude"][...])
        if amplitude.shape != phase.shape:
            raise ValueError(f"{path!r}: amplitude shape {amplitude.shape} differs from phase shape {phase.shape}")
    for name, data in (("phase", phase), ("amplitude", amplitude)):
        if data is None:
            continue
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        if bad:
            first = tuple(int(i[0]) for i in np.nonzero(~np.isfinite(data)))
            raise ValueError(f"{path!r} contains {bad} non-finite value{'s' if bad > 1 else ''} (NaN or Inf) in its {name} (the first at "
                             f"pixel {first}): fix or re-run the reconstruction; nothing was exported")
    out = _check_out_file(out, overwrite, "exported result")

    py4DSTEM = _py4dstem()
    from emdfile import Metadata

    if not math.isclose(dx, dy, rel_tol=1e-9):
        warnings.warn(f"pixels are {dx:g}×{dy:g} Å; py4DSTEM's R_pixel_size holds one value, so it is set to "
                      f"{dx:g} Å (the flowtie_dask Metadata holds both)", stacklevel=2)
    rs = py4DSTEM.RealSlice(data=phase, name="phase")
    cal = rs.calibration
    cal.set_R_pixel_size(dx)
    cal.set_R_pixel_units("A")
    rs.set_dim(0, [origin[0], origin[0] + dx], units="A", name="x")
    rs.set_dim(1, [origin[1], origin[1] + dy], units="A", name="y")
    rec = Metadata(name=RECORD_NAME)
    for k, v in {
        "schema": RESULT_RECORD_SCHEMA,
        "schema_version": 1,
        "source_result": os.path.abspath(path),
        "phase_units": "rad",
        "pixel_size_A": [dx, dy],
        "origin_A": list(origin),
        "has_amplitude": amplitude is not None,
        "result_attrs_json": json.dumps(_json_safe(attrs)),
        "exporter": f"flowtie-dask {__version__}",
    }.items():
        rec[k] = v
    rs.metadata = rec
    if amplitude is not None:
        amp = py4DSTEM.RealSlice(data=amplitude, name="amplitude")
        rs.attach(amp)
    with atomic_path(out, overwrite=overwrite) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        py4DSTEM.save(tmp, rs, mode="w")
    return out


def is_scan_store(path) -> bool:
    """Whether ``path`` is a scan store (a Zarr group whose ``schema`` attribute is ``flowtie-dask/scan``).

    Parameters
    ----------
    path : str or PathLike
        Any path; missing paths and non-Zarr paths give False.

    Returns
    -------
    bool
        True for a scan store (complete or not; :func:`flowtie_dask.store.open_scan_store` validates it).
    """
    import zarr

    try:
        group = zarr.open_group(os.fspath(path), mode="r")
    except Exception:
        return False
    return group.attrs.get("schema") == SCHEMA

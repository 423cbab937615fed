"""py4DSTEM DataCubes and files into scan stores: :func:`datacubes_to_store`, :func:`read_datacube`, :func:`import_files`."""

from __future__ import annotations

import os
import warnings
from typing import Any

from .common import _py4dstem
from .writer import _write_store

_ROLES = ("minus (−Δz)", "focus", "plus (+Δz)")
_H5_EXTENSIONS = (".h5", ".hdf5", ".emd", ".py4dstem")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def datacubes_to_store(cubes, *, defocus, energy, semiangle, out, aperture_edge=None, aberrations=None,
                       detector_center=None, chunks=None, overwrite=False, provenance=None, periodic=None,
                       intensity_scale=None) -> str:
    """Write three in-memory py4DSTEM DataCubes (a defocus series) as a scan store.

    Parameters
    ----------
    cubes : sequence of 3 py4DSTEM.DataCube
        Each of shape (Rx, Ry, Qx, Qy), all the same shape and calibration, in the order of ``defocus``.
        Scan step from ``R_pixel_size``/``R_pixel_units`` (Å, nm, pm or µm; ``pixels`` is refused),
        detector sampling from ``Q_pixel_size``/``Q_pixel_units`` (A^-1, nm^-1 or mrad). The arrays are
        read block by block and never modified.
    defocus : sequence of 3 floats
        Δf = −C10 of each cube in Å (positive = underfocus), e.g. (−20, 0, 20).
    energy : float
        Beam energy in eV.
    semiangle : float
        Convergence semi-angle in mrad.
    out : str or PathLike
        Destination store folder (``*.zarr``), written atomically.
    aperture_edge : float, optional
        Soft aperture edge width in mrad; default: the value recorded by :func:`export_store`, else 0.
    aberrations : dict, optional
        ``C12`` (Å), ``phi12`` (rad), ``C30`` (Å); default: the recorded ones, else none.
    detector_center : (float, float), optional
        Pixel (qx, qy) of the unscattered beam's centre; default: the calibration's origin
        (``qx0_mean``, ``qy0_mean``), else (Qx//2, Qy//2).
    chunks : int or (int, int), optional
        Scan positions per store chunk (cx, cy); default ~8 MiB chunks. Memory use is a few chunks.
    overwrite : bool
        Replace an existing store at ``out``.
    provenance : dict, optional
        JSON-serialisable extra record merged into the store's provenance.
    periodic : bool, optional
        True when the scan covers whole periods of a periodic specimen; default: recorded, else False.
    intensity_scale : float or 3 floats, optional
        Factors the intensities are multiplied by; default: 1 / (mean total counts per pattern) of each
        scan, or 1 for DataCubes exported by :func:`export_store` (already normalised).

    Returns
    -------
    str
        Absolute path of the store; ``provenance["intensity_scale"]`` holds the three factors used.

    Raises
    ------
    ValueError
        One line naming the problem: not DataCubes, shapes or calibrations that differ, uncalibrated or
        unknown units, bad optics, an existing ``out`` without ``overwrite``.
    """
    cubes = list(cubes) if isinstance(cubes, (list, tuple)) else [cubes]
    labels = [f"DataCube {i} ({_ROLES[i] if i < 3 else '?'}, {getattr(c, 'name', '?')!r})"
              for i, c in enumerate(cubes)]
    loaders = [(lambda c=c: c) for c in cubes]
    return _write_store(loaders, labels, defocus=defocus, energy=energy, semiangle=semiangle, out=out,
                        aperture_edge=aperture_edge, aberrations=aberrations, detector_center=detector_center,
                        chunks=chunks, overwrite=overwrite, provenance=provenance, periodic=periodic,
                        intensity_scale=intensity_scale, files=None)


def _find_datacubes(obj, found: list) -> None:
    import emdfile

    from py4DSTEM import DataCube

    if isinstance(obj, DataCube):
        found.append(obj)
    if isinstance(obj, emdfile.Node):
        for key in list(obj.treekeys):
            _find_datacubes(obj.get_from_tree(key), found)


def _describe(obj) -> str:
    if isinstance(obj, (list, tuple)):
        return ", ".join(_describe(o) for o in obj) or "nothing"
    return f"{type(obj).__name__} {getattr(obj, 'name', '')!r}".strip()


def read_datacube(path) -> Any:
    """Read the one py4DSTEM DataCube in a file.

    Parameters
    ----------
    path : str or PathLike
        ``.h5``/``.hdf5``/``.emd``/``.py4dstem`` files are read with ``py4DSTEM.read`` (falling back
        to ``py4DSTEM.import_file`` for the HDF5 formats it imports, e.g. arina, abTEM); any other
        format (``.dm4``, ``.mib``, ``.raw`` …) with ``py4DSTEM.import_file``.

    Returns
    -------
    py4DSTEM.DataCube
        Shape (Rx, Ry, Qx, Qy), with the file's calibration; loaded into memory by py4DSTEM.

    Raises
    ------
    ValueError
        The file does not exist, py4DSTEM cannot read it, or it holds no DataCube or more than one.
    """
    py4DSTEM = _py4dstem()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"file {path!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a folder, not a py4DSTEM file")
    ext = os.path.splitext(path)[1].lower()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ext in _H5_EXTENSIONS:
            try:
                obj = py4DSTEM.read(path)
                if isinstance(obj, list) and all(isinstance(o, str) for o in obj):  # several EMD trees
                    obj = [py4DSTEM.read(path, datapath=o) for o in obj]
            except Exception as exc:
                try:
                    obj = py4DSTEM.import_file(path)
                except Exception as exc2:
                    raise ValueError(f"py4DSTEM cannot read {path!r}: {_first_line(exc)}; "
                                     f"import_file: {_first_line(exc2)}") from None
        else:
            try:
                obj = py4DSTEM.import_file(path)
            except Exception as exc:
                raise ValueError(f"py4DSTEM.import_file cannot read {path!r}: {_first_line(exc)}") from None
    found: list = []
    for o in obj if isinstance(obj, list) else [obj]:
        _find_datacubes(o, found)
    if not found:
        raise ValueError(f"{path!r} holds no py4DSTEM DataCube (found {_describe(obj)}); "
                         "give a file with a 4D-STEM DataCube")
    if len(found) > 1:
        raise ValueError(f"{path!r} holds {len(found)} DataCubes ({_describe(found)}); "
                         "save each scan of the series to its own file")
    return found[0]


def import_files(minus, focus, plus, *, defocus, energy, semiangle, out, aperture_edge=None, aberrations=None,
                 detector_center=None, chunks=None, overwrite=False, provenance=None, periodic=None,
                 intensity_scale=None) -> str:
    """Import three py4DSTEM-readable files (a defocus series) into a scan store.

    The files are read one at a time (py4DSTEM loads each fully into memory) and written block by
    block, so peak memory is about one scan plus one chunk.

    Parameters
    ----------
    minus, focus, plus : str or PathLike
        Files with one DataCube (Rx, Ry, Qx, Qy) each, in the order of ``defocus`` (−Δz, 0, +Δz):
        EMD/py4DSTEM ``.h5`` (``py4DSTEM.read``) or a raw format ``py4DSTEM.import_file`` reads.
    defocus : sequence of 3 floats
        Δf = −C10 of the three files in Å (positive = underfocus).
    energy, semiangle : float
        Beam energy in eV and convergence semi-angle in mrad.
    out : str or PathLike
        Destination store folder (``*.zarr``), written atomically.
    aperture_edge, aberrations, detector_center, chunks, overwrite, provenance, periodic, intensity_scale
        As in :func:`datacubes_to_store`.

    Returns
    -------
    str
        Absolute path of the store.

    Raises
    ------
    ValueError
        A file is missing or holds no DataCube, or anything :func:`datacubes_to_store` refuses.
    """
    paths = [os.fspath(p) for p in (minus, focus, plus)]
    for role, p in zip(_ROLES, paths):
        if not os.path.exists(p):
            raise ValueError(f"the {role} file {p!r} does not exist")
    labels = [f"{os.path.basename(p)} ({role})" for role, p in zip(_ROLES, paths)]
    loaders = [(lambda p=p: read_datacube(p)) for p in paths]
    return _write_store(loaders, labels, defocus=defocus, energy=energy, semiangle=semiangle, out=out,
                        aperture_edge=aperture_edge, aberrations=aberrations, detector_center=detector_center,
                        chunks=chunks, overwrite=overwrite, provenance=provenance, periodic=periodic,
                        intensity_scale=intensity_scale, files=[os.path.abspath(p) for p in paths])

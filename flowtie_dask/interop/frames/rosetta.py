"""Camera formats read lazily through RosettaSciIO (``rsciio.<reader>.file_reader(path, lazy=True)`` gives Dask
arrays backed by memory maps): Merlin ``.mib``, EMPAD ``.xml`` (+ its ``.raw``), Gatan ``.dm3``/``.dm4``,
NanoMegas ``.blo``, TVIPS ``.tvips``, ``.mrc`` (Direct Electron …), FEI TIA ``.ser``, Velox ``.emd``, HyperSpy
``.hspy``/``.zspy``.

The reader is asked for chunks of one store block of scan positions (``block`` hint) where it takes ``chunks``, so a
block read touches only its own frames. The opened file is kept per process (one parse of the header per process,
not per task), keyed by the file's size and modification time.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import warnings

import numpy as np

from .base import FrameSource, check_values_dtype, first_line, frames_to_scan, jsonable

__all__ = ["RsciioFrames", "RSCIIO_READERS"]

#: file extension → RosettaSciIO reader module (``rsciio.<name>``), for the formats that hold 4D-STEM scans
RSCIIO_READERS = {
    "mib": "quantumdetector", "xml": "empad", "dm3": "digitalmicrograph", "dm4": "digitalmicrograph",
    "blo": "blockfile", "tvips": "tvips", "mrc": "mrc", "ser": "tia", "emd": "emd", "hspy": "hspy", "zspy": "zspy",
}
_LENGTH = {"nm": 10.0, "å": 1.0, "a": 1.0, "angstrom": 1.0, "pm": 0.01, "µm": 1e4, "um": 1e4}
_INVERSE = {"1/nm": 0.1, "nm^-1": 0.1, "nm⁻¹": 0.1, "1/å": 1.0, "1/a": 1.0, "å^-1": 1.0, "a^-1": 1.0, "å⁻¹": 1.0}
_ANGLE = {"mrad": 1.0, "rad": 1e3}


def _module(name: str):
    logging.getLogger("rsciio").setLevel(logging.ERROR)  # its warnings (no numba, no .hdr file) are not ours
    try:
        return importlib.import_module(f"rsciio.{name}")
    except ImportError as exc:
        raise ValueError(f"RosettaSciIO's {name} reader is not available ({first_line(exc)}); "
                         "pip install rosettasciio") from None


def _stamp(path: str) -> tuple:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=8)
def _load(path: str, stamp: tuple, reader: str, kwargs: tuple) -> list:
    """The reader's signal dictionaries of a file (lazy), once per process and file version."""
    mod = _module(reader)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mod.file_reader(path, lazy=True, **dict(kwargs))
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's
        raise ValueError(f"{path}: RosettaSciIO's {reader} reader cannot read it ({type(exc).__name__}: "
                         f"{first_line(exc)}); check the file is complete and of this format") from None


def _kwargs(reader: str, scan_shape, block, ndim_hint: int | None) -> dict:
    """Keyword arguments the reader takes: the scan shape (``navigation_shape`` is (x, y), i.e. (Ry, Rx)) and
    chunks of one block of scan positions (the two detector axes whole)."""
    params = inspect.signature(_module(reader).file_reader).parameters
    kw = {}
    if scan_shape is not None and "navigation_shape" in params:
        kw["navigation_shape"] = (int(scan_shape[1]), int(scan_shape[0]))
    if scan_shape is not None and "scan_shape" in params:  # TVIPS: (scan_y, scan_x), the array's own order
        kw["scan_shape"] = (int(scan_shape[0]), int(scan_shape[1]))
    if block is not None and "chunks" in params and ndim_hint == 4:
        kw["chunks"] = (int(block[0]), int(block[1]), -1, -1)
    return kw


def _pick(path: str, signals: list, dataset, scan_shape) -> tuple[int, dict]:
    """The signal holding the scan: the one named by ``dataset`` (index or title), else the only 3D/4D one."""
    def title(s):
        return str(((s.get("metadata") or {}).get("General") or {}).get("title", ""))

    if dataset is not None:
        for i, s in enumerate(signals):
            if str(dataset) in (str(i), title(s)):
                return i, s
        raise ValueError(f"{path}: no signal {dataset!r}; it holds "
                         + ", ".join(f"{i}: {title(s)!r} {tuple(np.shape(s['data']))}" for i, s in enumerate(signals)))
    found = [(i, s) for i, s in enumerate(signals) if np.ndim(s["data"]) == 4
             or (np.ndim(s["data"]) == 3 and scan_shape is not None)]
    if len(found) == 1:
        return found[0]
    listed = ", ".join(f"{i}: {title(s)!r} {tuple(np.shape(s['data']))}" for i, s in enumerate(signals)) or "nothing"
    if not found:
        raise ValueError(f"{path}: holds no 4D scan ({listed}); for a stack of frames give --scan-shape RX RY")
    raise ValueError(f"{path}: holds several scans ({listed}); choose one with --dataset INDEX")


def _unit(u) -> str:
    return str(u or "").strip().lower().replace(" ", "")


def _calibration(axes: list) -> dict:
    """Scan step (Å) and detector sampling (1/Å) or angle (mrad per pixel) from the reader's axes, when their
    units say what they are (uncalibrated axes, scale 1 with no unit, give nothing)."""
    if len(axes) != 4:
        return {}
    axes = sorted(axes, key=lambda a: a.get("index_in_array", axes.index(a)))
    scan, det = axes[:2], axes[2:]
    out = {}
    units = {_unit(a.get("units")) for a in scan}
    if len(units) == 1 and (u := units.pop()) in _LENGTH:
        out["scan_step"] = tuple(float(a["scale"]) * _LENGTH[u] for a in scan)
    units = {_unit(a.get("units")) for a in det}
    if len(units) == 1:
        u = units.pop()
        if u in _INVERSE:
            out["detector_sampling"] = tuple(float(a["scale"]) * _INVERSE[u] for a in det)
        elif u in _ANGLE:
            out["detector_angle"] = tuple(float(a["scale"]) * _ANGLE[u] for a in det)
    return {k: v for k, v in out.items() if all(np.isfinite(x) and x > 0 for x in v)}


class RsciioFrames(FrameSource):
    """A file RosettaSciIO reads lazily, as (Rx, Ry, Qx, Qy) patterns in the reader's array order.

    Parameters
    ----------
    path : str
    dataset : str or int, optional
        The signal to read when the file holds several (its index or title).
    scan_shape : (Rx, Ry), optional
        Passed to readers that take a navigation shape (Merlin .mib without a .hdr file, TVIPS); a stack of frames is
        reshaped to it (row-major), a 4D signal checked against it.
    block : (cx, cy), optional
        Chunks of this many scan positions are asked of readers that take ``chunks``.
    """

    def __init__(self, path: str, *, dataset=None, scan_shape=None, block=None, **hints):
        super().__init__(path, dataset=dataset, scan_shape=scan_shape, block=block, **hints)
        ext = os.path.splitext(self.path)[1].lower().lstrip(".")
        if ext not in RSCIIO_READERS:
            raise ValueError(f"{self.path}: .{ext} is not a format read through RosettaSciIO here (known: "
                             + ", ".join(f".{e}" for e in sorted(RSCIIO_READERS)) + ")")
        reader = RSCIIO_READERS[ext]
        self.format = f"rosettasciio:{reader}"
        kw = _kwargs(reader, scan_shape, block, 4)
        try:
            signals = _load(self.path, _stamp(self.path), reader, tuple(sorted(kw.items())))
        except ValueError:
            if "chunks" not in kw:
                raise
            kw.pop("chunks")  # a reader that refuses these chunks reads with its own
            signals = _load(self.path, _stamp(self.path), reader, tuple(sorted(kw.items())))
        index, signal = _pick(self.path, signals, dataset, scan_shape)
        data = signal["data"]
        self.dtype = check_values_dtype(self.path, data.dtype)
        if data.ndim == 3:
            rx, ry = frames_to_scan(self.path, data.shape[0], scan_shape)
            data = data.reshape((rx, ry) + tuple(data.shape[1:]))
        elif scan_shape is not None and tuple(int(v) for v in scan_shape) != tuple(data.shape[:2]):
            raise ValueError(f"{self.path}: the file holds a {data.shape[0]}×{data.shape[1]} scan but the scan shape "
                             f"given is {scan_shape[0]}×{scan_shape[1]}"
                             " (--scan-shape, or the log's scan_shape); give the file's")
        if min(data.shape) < 1:
            raise ValueError(f"{self.path}: the scan is empty, shape {tuple(data.shape)}")
        self._data = data
        self.shape = tuple(int(v) for v in data.shape)
        self.dataset = None if len(signals) == 1 else str(index)
        self.calibration = _calibration(list(signal.get("axes") or [])) if data.ndim == 4 else {}
        lazy = not isinstance(data, np.ndarray) or isinstance(data, np.memmap)
        self.details = {"reader": f"rsciio.{reader}", "reader_kwargs": {k: list(v) if isinstance(v, tuple) else v
                                                                      for k, v in kw.items()},
                        "lazy": bool(lazy), "signal_index": int(index), "axes": [
                            {k: a.get(k) for k in ("name", "scale", "offset", "units") if k in a}
                            for a in (signal.get("axes") or [])]}
        self.details = jsonable(self.details)

    def _read(self, rows: slice, cols: slice) -> np.ndarray:
        if self._data is None:
            raise ValueError(f"{self.path}: the file was closed; reopen the source")
        block = self._data[rows, cols]
        try:
            if hasattr(block, "compute"):
                block = block.compute(scheduler="synchronous")  # inside a Dask task: no nested thread pool
            return np.array(block, dtype=self.dtype)
        except Exception as exc:  # noqa: BLE001 - a truncated file, a reader's error
            raise ValueError(f"{self.path}: cannot read scan rows {rows.start}–{rows.stop - 1} "
                             f"({type(exc).__name__}: {first_line(exc)}); the file may be truncated: copy it "
                             "again") from None

    def close(self) -> None:
        self._data = None


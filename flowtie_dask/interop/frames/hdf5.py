"""HDF5 frame stacks as counting cameras write them (Dectris/arina, EMPAD-HDF5, Merlin-HDF5, simulations): a
dataset of frames (N, Qx, Qy) in row-major scan order, or a 4D dataset (Rx, Ry, Qx, Qy), with the compression
filters such files use (bitshuffle-LZ4, LZ4, Blosc, Zstd …: ``hdf5plugin`` is imported before h5py reads).

Also :func:`is_py4dstem_file`: whether an HDF5 file is a py4DSTEM/EMD 1.0 file (read through py4DSTEM instead).
"""

from __future__ import annotations

import numpy as np

from .base import FrameSource, check_values_dtype, first_line, frames_to_scan

__all__ = ["HDF5Frames", "is_py4dstem_file", "DEFAULT_DATASETS"]

#: datasets looked for when none is given (in this order), before searching the file
DEFAULT_DATASETS = ("entry/data/data", "entry/data", "data", "frames")
#: chunk cache of each open file: frames chunked several at a time are decompressed once per block
_CACHE_BYTES = 32 * 2**20


def _h5py():
    import hdf5plugin  # noqa: F401 - registers bitshuffle, LZ4, Blosc, Zstd … with HDF5 before h5py reads
    import h5py

    return h5py


def _open_file(path: str):
    h5py = _h5py()
    try:
        return h5py.File(path, "r", rdcc_nbytes=_CACHE_BYTES)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({first_line(exc)}); give an HDF5 frame stack, or "
                         "--dtype/--shape for a raw binary file") from None


def is_py4dstem_file(path: str) -> bool:
    """True for a py4DSTEM/EMD 1.0 file (root attribute ``emd_group_type``) or an older py4DSTEM file
    (a top-level ``4DSTEM_*`` group). False for other HDF5 files; a one-line ``ValueError`` for non-HDF5 ones."""
    with _open_file(path) as f:
        if "emd_group_type" in f.attrs:
            return True
        return any(str(k).startswith("4DSTEM_") for k in f.keys())


def _candidates(f) -> list[tuple[str, tuple]]:
    import h5py

    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim in (3, 4) and min(obj.shape) > 0:
            found.append((name, tuple(obj.shape)))

    f.visititems(visit)
    return found


def _find_dataset(f, path: str, dataset: str | None):
    import h5py

    if dataset is not None:
        name = dataset.strip("/")
        if name not in f:
            raise ValueError(f"{path}: no dataset {dataset!r}; the 3D/4D datasets in it are: "
                             + (", ".join(n for n, _ in _candidates(f)[:6]) or "none"))
        obj = f[name]
        if not isinstance(obj, h5py.Dataset):
            raise ValueError(f"{path}: {dataset!r} is a group, not a dataset; give the frames' dataset "
                             "(e.g. --dataset entry/data/data)")
        return name, obj
    for name in DEFAULT_DATASETS:
        if name in f and isinstance(f[name], h5py.Dataset) and f[name].ndim in (3, 4):
            return name, f[name]
    found = _candidates(f)
    if len(found) == 1:
        return found[0][0], f[found[0][0]]
    listed = ", ".join(f"{n} {s}" for n, s in found[:6]) or "none"
    raise ValueError(f"{path}: give the frames' dataset with --dataset (3D/4D datasets in the file: {listed})")


def _filters(path: str, name: str, d) -> list[str]:
    """Names of the dataset's filters; a one-line error for one this HDF5 library cannot decode."""
    h5py = _h5py()
    plist = d.id.get_create_plist()
    names = []
    for i in range(plist.get_nfilters()):
        code, _flags, _values, label = plist.get_filter(i)
        label = label.decode(errors="replace") if isinstance(label, bytes) else str(label)
        if not h5py.h5z.filter_avail(code):
            raise ValueError(f"{path}: dataset {name!r} is compressed with HDF5 filter {code} ({label or 'unknown'}), "
                             "which is not available here; install the plugin that provides it (pip install "
                             "hdf5plugin covers bitshuffle, LZ4, Blosc, Zstd, Bzip2, SZ …)")
        names.append(label or str(code))
    return names


class HDF5Frames(FrameSource):
    """An HDF5 dataset of frames (N, Qx, Qy), row-major scan order, or of patterns (Rx, Ry, Qx, Qy).

    Parameters
    ----------
    path : str
    dataset : str, optional
        Path of the dataset in the file; default ``entry/data/data`` (or the file's only 3D/4D dataset).
    scan_shape : (Rx, Ry), optional
        Needed for a frame stack (Rx·Ry must equal N); checked against a 4D dataset.
    """

    format = "hdf5"

    def __init__(self, path: str, *, dataset: str | None = None, scan_shape=None, **hints):
        super().__init__(path, dataset=dataset, scan_shape=scan_shape, **hints)
        self._file = _open_file(self.path)
        try:
            name, d = _find_dataset(self._file, self.path, dataset)
            self.dtype = check_values_dtype(self.path, d.dtype, f"the frames in {name!r}")
            if d.ndim == 3:
                rx, ry = frames_to_scan(self.path, d.shape[0], scan_shape, what=f"frames in {name!r}")
                self._frames = True
            else:
                rx, ry = d.shape[:2]
                if scan_shape is not None and tuple(int(v) for v in scan_shape) != (rx, ry):
                    raise ValueError(f"{self.path}: dataset {name!r} has a {rx}×{ry} scan but the scan shape given is "
                                     f"{scan_shape[0]}×{scan_shape[1]}"
                                     " (--scan-shape, or the log's scan_shape); give the file's")
                self._frames = False
            self.shape = (int(rx), int(ry), int(d.shape[-2]), int(d.shape[-1]))
            self.dataset = name
            self._d = d
            self.details = {"hdf5_dataset_shape": [int(v) for v in d.shape], "hdf5_chunks":
                            None if d.chunks is None else [int(v) for v in d.chunks],
                            "hdf5_filters": _filters(self.path, name, d), "layout": "frames, row-major scan order"
                            if self._frames else "4D (Rx, Ry, Qx, Qy)"}
        except BaseException:
            self.close()
            raise

    def _read(self, rows: slice, cols: slice) -> np.ndarray:
        if self._file is None:
            raise ValueError(f"{self.path}: the file was closed; reopen the source")
        nr, nc = rows.stop - rows.start, cols.stop - cols.start
        out = np.empty((nr, nc) + self.shape[2:], dtype=self.dtype)
        ry = self.shape[1]
        try:
            if not self._frames:
                if nr and nc:
                    self._d.read_direct(out, source_sel=np.s_[rows, cols])
            else:
                for i in range(nr):  # one contiguous run of frames per scan row
                    k0 = (rows.start + i) * ry + cols.start
                    if nc:
                        self._d.read_direct(out, source_sel=np.s_[k0:k0 + nc], dest_sel=np.s_[i])
        except (OSError, ValueError, RuntimeError) as exc:
            where = f"scan rows {rows.start}–{rows.stop - 1}, columns {cols.start}–{cols.stop - 1}"
            raise ValueError(f"{self.path}: cannot read {self.dataset!r} at {where} ({first_line(exc)}); the file "
                             "may be truncated or corrupt: copy it again from the microscope") from None
        return out

    def close(self) -> None:
        f, self._file = getattr(self, "_file", None), None
        if f is not None:
            try:
                f.close()
            except Exception:  # noqa: BLE001 - closing a file h5py already closed
                pass

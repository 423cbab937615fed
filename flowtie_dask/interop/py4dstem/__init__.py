"""py4DSTEM DataCubes in and out of flowtie-dask scan stores; reconstruction results to py4DSTEM files.

Conventions (py4DSTEM 0.14)
---------------------------
Axes
    A DataCube is (Rx, Ry, Qx, Qy), the store's axis order; the three DataCubes of a defocus series become
    ``intensity[0]``, ``intensity[1]``, ``intensity[2]`` in the order given, which is the order of
    ``defocus``.
Defocus
    Δf = −C10 in Å, positive = underfocus (abTEM/Kirkland), as everywhere in flowtie-dask.
Scan step
    ``calibration.R_pixel_size`` in ``R_pixel_units``: ``A``/``Å``/``angstrom`` (as is), ``nm`` (×10),
    ``pm`` (÷100), ``um``/``µm`` (×10⁴). ``pixels`` (py4DSTEM's default, i.e. uncalibrated) or unknown
    units are refused: calibrate the DataCube first.
Detector sampling
    ``calibration.Q_pixel_size`` in ``Q_pixel_units``: ``A^-1`` (or ``1/A``, ``1/Å``, ``Å^-1``) as is,
    ``nm^-1`` (or ``1/nm``) ÷10, ``mrad`` → q = θ/λ with θ in rad and λ from the beam energy (the
    small-angle relation py4DSTEM's own readers use). ``pixels`` is refused.
Detector orientation
    ``QR_rotation_degrees`` → ``detector_rotation`` and ``QR_flip`` → ``detector_transpose``, unchanged
    and with py4DSTEM's meaning (``BraggVectors`` applies them this way): a detector vector
    (qx, qy) relative to the centre is first swapped to (qy, qx) when the flip is set, then rotated into
    scan coordinates by R(θ) = [[cos θ, −sin θ], [sin θ, cos θ]]. An unset rotation is 0°.
Detector centre
    The ``detector_center`` argument if given, else the calibration's origin (``qx0_mean``,
    ``qy0_mean``, in pixels) if set, else (Qx//2, Qy//2). The patterns are not shifted.
Intensity
    Stored float32, each scan multiplied by a factor that makes its mean pattern sum 1 (the store's
    convention: fraction of the incident beam per pixel), unless the DataCube carries the record that
    :func:`export_store` writes (the patterns already follow the convention: factor 1) or the caller
    gives the factors. The factors are recorded in ``provenance["intensity_scale"]`` so that
    ``stored = original × intensity_scale[i]``.

Exported DataCubes carry a py4DSTEM ``Metadata`` called ``flowtie_dask`` with the optics (energy,
semi-angle, defocus and its convention, aberrations, aperture edge) so a round trip loses nothing.

py4DSTEM is imported only when a function here runs; ``CUPY_PYLOPS`` is set to ``0`` first unless
already set (py4DSTEM imports pylops, which otherwise probes CuPy and fails on machines without a GPU).

Modules: :mod:`.calibration` (py4DSTEM calibrations and records → ScanMetadata values), :mod:`.writer`
(the scan-store writer), :mod:`.importing` (DataCubes and files in), :mod:`.exporting` (stores and
results out), :mod:`.common` (record names, the lazy py4DSTEM import, small checks).
"""

from .common import DATACUBE_RECORD_SCHEMA, RECORD_NAME, RESULT_RECORD_SCHEMA  # noqa: F401
from .exporting import export_result, export_store, is_scan_store, store_to_datacubes
from .importing import datacubes_to_store, import_files, read_datacube

__all__ = [
    "datacubes_to_store",
    "import_files",
    "read_datacube",
    "store_to_datacubes",
    "export_store",
    "export_result",
    "is_scan_store",
]

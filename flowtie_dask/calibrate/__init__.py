"""Calibration of a scan store from its own data (``flowtie-dask calibrate``): beam centre and descan, scan–detector
rotation and transpose, drift of the defocused scans against the focus scan (DESIGN §7: "calibrate/").

The estimators are pure functions of NumPy arrays (no dask, zarr or store): :mod:`.centre` (bright-field disk fit,
descan plane), :mod:`.rotation` (least-curl orientation of the centre-of-mass field, 180° by the iCoM phase),
:mod:`.drift` (upsampled cross-correlation of virtual images), :mod:`.virtual` (centre of mass and virtual images
of a block of patterns). :mod:`.reading` reduces a store by blocks of scan rows; :mod:`.calibration` runs the
estimators on a store, checks them and records them (:func:`calibrate_store`, :func:`record_calibration`);
:mod:`.figure` draws what was found.
"""

from .calibration import STEPS, Calibration, calibrate_store, describe_calibration, record_calibration
from .centre import DescanPlane, DiskFit, descan_plane, fit_bright_field_disk, threshold_disk
from .drift import DriftFit, Registration, fit_scan_drift, register_shift, shift_image
from .figure import calibration_figure
from .rotation import RotationFit, curl_divergence, fit_rotation, icom_phase, orient_field
from .virtual import VIRTUAL_IMAGES, centre_of_mass_px, detector_masks, virtual_images

__all__ = [
    "STEPS", "Calibration", "calibrate_store", "record_calibration", "describe_calibration", "calibration_figure",
    "DiskFit", "DescanPlane", "fit_bright_field_disk", "threshold_disk", "descan_plane",
    "RotationFit", "fit_rotation", "orient_field", "curl_divergence", "icom_phase",
    "Registration", "DriftFit", "register_shift", "fit_scan_drift", "shift_image",
    "VIRTUAL_IMAGES", "centre_of_mass_px", "detector_masks", "virtual_images",
]

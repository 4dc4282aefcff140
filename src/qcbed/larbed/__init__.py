"""LARBED: 4-D rocking-beam datasets → LACBED images with variances.

A LARBED acquisition rocks a nearly parallel beam over a 2-D grid of tilts and
records one diffraction pattern per tilt (Busch et al. 2024; Ni, Busch & Zuo,
PyExtal, §2.2): a 4-D dataset (tilt_y, tilt_x, det_y, det_x). Integrating each
Bragg spot at each tilt, after subtracting the local diffuse background, gives
one LACBED image per reflection. This package does that, streaming:

* :mod:`~qcbed.larbed.readers` — lazy readers (EMPAD, Merlin MIB, DM3/4,
  py4DSTEM/EMD 1.0, HDF5, npy, zarr) → :class:`FourDData`;
* :mod:`~qcbed.larbed.virtual` — virtual bright-field/annular/aperture images,
  mean and maximum patterns;
* :mod:`~qcbed.larbed.calibration` — tilt-scan calibration from a vacuum scan;
* :mod:`~qcbed.larbed.indexing` — spot positions of every reflection per tilt;
* :mod:`~qcbed.larbed.tracking` — measured positions → smooth drift model;
* :mod:`~qcbed.larbed.extraction` — disc integration, background, variance;
* :mod:`~qcbed.larbed.stack` — building the :class:`qcbed.experiment.LACBEDStack`
  and its HDF5 file;
* :mod:`~qcbed.larbed.synthetic` — synthetic datasets for tests and examples.

Needs dask (``pip install 'qcbed[fourd]'``); zarr and emdfile for those formats.
See ``docs/larbed.md``.
"""

from __future__ import annotations

from .calibration import (
    TiltCalibration,
    beam_positions,
    calibrate_from_vacuum,
    fit_tilt_calibration,
)
from .extraction import ExtractionSettings, extract_lacbed
from .indexing import (
    DriftModel,
    SpotMap,
    SpotPredictor,
    net_reflections,
    select_reflections,
    zolz_reflections,
)
from .readers import (
    FourDData,
    detect_format,
    open_4d,
    read_dm_4d,
    read_emd,
    read_empad,
    read_hdf5,
    read_mib,
    read_npy,
    read_zarr,
)
from .stack import build_stack, geometry_from_kt, load_stack, save_stack
from .tracking import fit_drift, measure_spots, refine_positions
from .variance import detector_from_dqe, spot_variance
from .virtual import (
    annulus_mask,
    disc_mask,
    max_pattern,
    mean_pattern,
    virtual_annular,
    virtual_aperture,
    virtual_bright_field,
    virtual_image,
)

__all__ = [
    "DriftModel",
    "ExtractionSettings",
    "FourDData",
    "SpotMap",
    "SpotPredictor",
    "TiltCalibration",
    "annulus_mask",
    "beam_positions",
    "build_stack",
    "calibrate_from_vacuum",
    "detect_format",
    "detector_from_dqe",
    "disc_mask",
    "extract_lacbed",
    "fit_drift",
    "fit_tilt_calibration",
    "geometry_from_kt",
    "load_stack",
    "max_pattern",
    "mean_pattern",
    "measure_spots",
    "net_reflections",
    "open_4d",
    "read_dm_4d",
    "read_emd",
    "read_empad",
    "read_hdf5",
    "read_mib",
    "read_npy",
    "read_zarr",
    "refine_positions",
    "save_stack",
    "select_reflections",
    "spot_variance",
    "virtual_annular",
    "virtual_aperture",
    "virtual_bright_field",
    "virtual_image",
    "zolz_reflections",
]

"""A raw scan as stored, whatever its file format (NIfTI, a DICOM file or series): what prediction needs to give
the model the slices it was trained on and to write its labels back in the scan's geometry."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..checks import check_finite
from ..errors import DataError

__all__ = ["LPS_TO_RAS", "RawVolume", "checked_volume", "itk_affine"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # ITK's and DICOM's world (LPS) -> nibabel's (RAS)


@dataclass
class RawVolume:
    """A raw volume as stored: voxels (x, y, z), the voxel -> world (RAS) affine, the NIfTI header (None for DICOM),
    the millimetres per unit of the affine, and notes on what the reader assumed or converted (printed)."""

    data: np.ndarray
    affine: np.ndarray
    header: Any = None  # nibabel's Nifti1Header / Nifti2Header of a NIfTI file
    mm_per_unit: float = 1.0
    notes: list[str] = field(default_factory=list)


def checked_volume(path: str | os.PathLike, data: np.ndarray, what: str) -> np.ndarray:
    """A 3-D grey volume from a file's array: trailing axes of size 1 dropped; DataError for 2-D and 4-D arrays,
    non-numeric voxels and NaN / inf."""
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        raise DataError(path, f"2-D {what} {data.shape}: the model segments 3-D volumes (a single slice is a 3-D "
                              f"file with one slice along z)")
    if data.ndim != 3:
        raise DataError(path, f"{data.ndim}-D {what} {data.shape}: the model takes one 3-D grey volume (1 channel); "
                              f"split the time points / channels into separate files")
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise DataError(path, f"{what} has non-numeric or complex voxels ({data.dtype})")
    check_finite(str(path), data)
    return data


def itk_affine(image) -> np.ndarray:
    """The RAS voxel -> world affine of a SimpleITK image or of a file reader's header (ITK's LPS origin, spacing and
    direction); a 2-D image's third axis is the normal of its plane, 1 mm. A 4-D image: its first three axes."""
    full = image.GetDimension()
    dimension = min(full, 3)
    spacing, origin, direction = np.ones(3), np.zeros(3), np.eye(3)
    spacing[:dimension] = image.GetSpacing()[:dimension]
    origin[:dimension] = image.GetOrigin()[:dimension]
    direction[:dimension, :dimension] = np.reshape(image.GetDirection(), (full, full))[:dimension, :dimension]
    if dimension == 2:
        direction[:, 2] = np.cross(direction[:, 0], direction[:, 1])
    lps = np.eye(4)
    lps[:3, :3], lps[:3, 3] = direction * spacing, origin
    return LPS_TO_RAS @ lps

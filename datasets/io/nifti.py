"""NIfTI files (nibabel): raw scans in (the preparations and prediction), label maps and volumes out (prediction and
the test scripts' ``--is_savenii``). Gzipped output is written with mtime 0, so equal volumes give equal files."""
from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np

from ..checks import check_finite, check_labels
from ..errors import DataError, first_line
from .volumes import RawVolume, checked_volume

__all__ = ["NIFTI_SUFFIXES", "NIFTI_AFFINE", "MM_PER_UNIT", "nifti_image", "mm_per_unit", "load_nifti",
           "load_nifti_pair", "read_nifti", "label_dtype", "nifti_bytes", "volume_nifti_bytes", "label_nifti_bytes",
           "label_nifti_image"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NIFTI_AFFINE = np.eye(4)  # unit spacing, as the release wrote its predictions
NIFTI_COMPRESSION = 1  # gzip level of label maps (nibabel's default; label maps compress well at any level)
VOLUME_COMPRESSION = 9  # gzip level of the test scripts' image / prediction / label volumes (gzip's default)
# NIfTI spatial units -> millimetres (an unknown unit is taken as mm, the NIfTI convention for scanner space).
MM_PER_UNIT = {"mm": 1.0, "meter": 1000.0, "micron": 0.001, "unknown": 1.0}


# ----------------------------------------------------------------------------------------------------------- reading
def nifti_image(path: str | os.PathLike) -> tuple[nib.spatialimages.SpatialImage, np.ndarray]:
    """(nibabel image, voxel array with scaling applied) of a file; DataError if missing or unreadable."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(path, "file does not exist")
    try:
        image = nib.load(path)
        return image, np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel, gzip and numpy raise many types for corrupt or truncated files
        raise DataError(path, f"cannot read NIfTI file (corrupt or truncated): {first_line(exc)}") from exc


def mm_per_unit(header) -> float:
    """Millimetres per spatial unit of a NIfTI header."""
    return MM_PER_UNIT.get(header.get_xyzt_units()[0], 1.0)


def load_nifti(path: str | os.PathLike) -> np.ndarray:
    """Voxel array of a NIfTI file (scaling applied); DataError if missing or unreadable."""
    return nifti_image(path)[1]


def load_nifti_pair(image_path: str, label_path: str, num_label_values: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw 3-D image and label volumes of a labelled download, checked: same shape, finite image, labels in range.

    Returns (image float64, label int64) in nibabel's (x, y, z) order.
    """
    image, label = load_nifti(image_path), load_nifti(label_path)
    if image.ndim != 3:
        raise DataError(image_path, f"expected a 3-D volume, got shape {image.shape}")
    if image.shape != label.shape:
        raise DataError(label_path, f"label shape {label.shape} differs from image shape {image.shape}")
    check_finite(image_path, image)
    check_labels(label_path, label, num_label_values)
    return np.asarray(image, dtype=np.float64), np.rint(label).astype(np.int64)


def read_nifti(path: str | os.PathLike) -> RawVolume:
    """An unlabeled NIfTI scan for prediction: a checked 3-D grey volume with its affine and header."""
    image, data = nifti_image(path)
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(path, f"not a NIfTI image ({type(image).__name__})")
    data = checked_volume(path, data, "NIfTI image")
    return RawVolume(data, np.asarray(image.affine, dtype=np.float64), image.header, mm_per_unit(image.header))


# ----------------------------------------------------------------------------------------------------------- writing
def label_dtype(num_classes: int) -> type:
    """The integer type of a label map of ``num_classes`` classes (uint8 up to 256)."""
    return np.uint8 if num_classes <= 256 else np.int16


def nifti_bytes(volume: np.ndarray) -> bytes:
    """Gzipped NIfTI-1 of a [D, H, W] (or [H, W]) array, axes reversed to (x, y, z) as SimpleITK writes them, unit
    spacing (the test scripts' ``--is_savenii`` volumes, as the release wrote them)."""
    return volume_nifti_bytes(np.asarray(volume).T, NIFTI_AFFINE)


def volume_nifti_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    """Gzipped NIfTI-1 of a float32 volume already in voxel order (x, y, z) with ``affine`` (voxel -> world, mm)."""
    data = np.asarray(data, dtype=np.float32)
    return gzip.compress(nib.Nifti1Image(data, affine).to_bytes(), compresslevel=VOLUME_COMPRESSION, mtime=0)


def label_nifti_bytes(labels: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header | None,
                      num_classes: int) -> bytes:
    """Gzipped NIfTI of :func:`label_nifti_image` (predict.py's label maps)."""
    image = label_nifti_image(labels, affine, header, num_classes)
    return gzip.compress(image.to_bytes(), compresslevel=NIFTI_COMPRESSION, mtime=0)


def label_nifti_image(labels: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header | None,
                      num_classes: int) -> nib.Nifti1Image | nib.Nifti2Image:
    """NIfTI (-1, or -2 like the input) of a label map with ``affine``: the input's header (qform / sform codes,
    units, ...) when given, else scanner-space codes in mm; integer voxels, no scaling, intent 'label'."""
    labels = np.asarray(labels, dtype=label_dtype(num_classes))
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    image = image_class(labels, affine, header=header)
    if header is None:  # DICOM: scanner space in mm
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        image.header.set_xyzt_units("mm")
    image.set_data_dtype(labels.dtype)
    image.header.set_slope_inter(1.0, 0.0)
    image.header.set_intent("label")
    image.header["cal_min"], image.header["cal_max"] = 0, num_classes - 1
    return image

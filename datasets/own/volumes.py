"""Reading the files of a raw data set: volumes (.nii.gz / .nii with nibabel, .nrrd / .mha with SimpleITK) as
voxels (x, y, z[, c]) with their RAS affine in millimetres, and only the header when the geometry is all that is
needed. Every problem is a :class:`~datasets.errors.DataError` naming the file."""
from __future__ import annotations

import os

import numpy as np

from ..errors import DataError, first_line
from ..io.nifti import NIFTI_SUFFIXES, mm_per_unit, nifti_image
from ..io.volumes import itk_affine

__all__ = ["VOLUME_ENDINGS", "IMAGE_ENDINGS", "ITK_ENDINGS", "file_ending", "read_volume_file",
           "read_volume_geometry"]

ITK_ENDINGS = (".nrrd", ".mha")
VOLUME_ENDINGS = (*NIFTI_SUFFIXES, *ITK_ENDINGS)
IMAGE_ENDINGS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")


def file_ending(name: str) -> str | None:
    """The known ending of a file name (``.nii.gz`` before ``.gz``), lower case, or None."""
    lower = name.lower()
    return next((ending for ending in (*VOLUME_ENDINGS, *IMAGE_ENDINGS) if lower.endswith(ending)), None)


def _itk_read(path: str, header_only: bool):
    import SimpleITK as sitk  # only .nrrd / .mha need it

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        if header_only:
            reader.ReadImageInformation()
            return reader
        return reader.Execute()
    except RuntimeError as exc:
        raise DataError(path, f"cannot read the file (corrupt or truncated): {first_line(exc)}") from exc


def read_volume_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(voxels (x, y, z) or (x, y, z, c), RAS affine in mm) of a .nii.gz / .nii / .nrrd / .mha file."""
    path = os.fspath(path)
    ending = file_ending(path)
    if ending in NIFTI_SUFFIXES:
        image, data = nifti_image(path)
        affine = np.asarray(image.affine, dtype=np.float64).copy()
        affine[:3] *= mm_per_unit(image.header)
        return data, affine
    if ending in ITK_ENDINGS:
        if not os.path.isfile(path):
            raise DataError(path, "file does not exist")
        import SimpleITK as sitk

        image = _itk_read(path, header_only=False)
        array = sitk.GetArrayFromImage(image)  # [z, y, x] (+ [c] for vector pixels; a 4-D image: [t, z, y, x])
        vector = image.GetNumberOfComponentsPerPixel() > 1
        spatial = array.ndim - (1 if vector else 0)
        order = (*reversed(range(spatial)), *range(spatial, array.ndim))
        return np.transpose(array, order), itk_affine(image)
    raise DataError(path, f"unknown file ending (volumes: {', '.join(VOLUME_ENDINGS)})")


def read_volume_geometry(path: str | os.PathLike) -> tuple[tuple[int, ...], np.ndarray]:
    """(voxel shape, RAS affine in mm) from the file's header alone (no voxels read)."""
    path = os.fspath(path)
    ending = file_ending(path)
    if ending in NIFTI_SUFFIXES:
        if not os.path.isfile(path):
            raise DataError(path, "file does not exist")
        import nibabel as nib

        try:
            image = nib.load(path)  # the header only: voxels are read when asked for
        except Exception as exc:  # nibabel raises many types for corrupt files
            raise DataError(path, f"cannot read NIfTI file (corrupt or truncated): {first_line(exc)}") from exc
        affine = np.asarray(image.affine, dtype=np.float64).copy()
        affine[:3] *= mm_per_unit(image.header)
        return tuple(int(n) for n in image.shape), affine
    if ending in ITK_ENDINGS:
        if not os.path.isfile(path):
            raise DataError(path, "file does not exist")
        reader = _itk_read(path, header_only=True)
        shape = tuple(int(n) for n in reader.GetSize())
        components = reader.GetNumberOfComponents()
        return (shape + ((components,) if components > 1 else ())), itk_affine(reader)
    raise DataError(path, f"unknown file ending (volumes: {', '.join(VOLUME_ENDINGS)})")

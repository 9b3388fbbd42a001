"""A DICOM series given as its folder (a scan exported slice by slice), read with SimpleITK / GDCM: slices ordered
by position, rescale applied, the geometry of the series as a nibabel (RAS) affine. Single files are
:mod:`datasets.io.dicom`'s."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError, first_line
from .dicom import luma
from .volumes import RawVolume, checked_volume, itk_affine

__all__ = ["dicom_series_ids", "read_dicom_series"]


def dicom_series_ids(folder: str | os.PathLike) -> list[str]:
    """Series instance UIDs of the DICOM files directly in ``folder`` (GDCM's scan; other files are ignored).
    ITK's warning display is off during the scan: a folder without DICOM files (of NIfTI files, say) is an expected
    answer here, not the 'No Series were found' that ITK would print on stderr for every such folder."""
    import SimpleITK as sitk  # only DICOM input needs it

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError as exc:
        raise DataError(folder, f"cannot scan the folder for DICOM files: {first_line(exc)}") from exc
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def read_dicom_series(folder: str | os.PathLike) -> RawVolume:
    """The one DICOM series in ``folder`` (SimpleITK/GDCM, slices ordered by position, rescale applied), with the
    affine of its geometry (ITK's LPS origin/spacing/direction turned into nibabel's RAS)."""
    import SimpleITK as sitk

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "not a folder (a DICOM series is given as the folder of its files)")
    series = dicom_series_ids(folder)
    if not series:
        entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
        raise DataError(folder, "empty folder" if not entries else
                        f"no DICOM series found among its {len(entries)} entries")
    if len(series) > 1:
        raise DataError(folder, f"mixed series: {len(series)} DICOM series in one folder "
                                f"({', '.join(series[:3])}{' ...' if len(series) > 3 else ''}); "
                                f"give each series its own folder")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise DataError(folder, f"cannot read the DICOM series (corrupt or truncated file?): {first_line(exc)}") \
            from exc
    components, notes = image.GetNumberOfComponentsPerPixel(), []
    if components not in (1, 3):
        raise DataError(folder, f"{components} components per pixel: the model takes grey volumes (1 channel)")
    array = sitk.GetArrayFromImage(image)  # [z, y, x] (colour: [z, y, x, 3], YBR converted to RGB by GDCM)
    if components == 3:  # as for a single colour file (datasets.io.dicom): luma, noted
        array = luma(array)
        notes.append("colour series converted to grey (BT.601 luma) for the grey model: its values are display "
                     "intensities, not the modality's units (e.g. not CT HU)")
    if image.GetDimension() == 2:
        array = array[None]
    data = checked_volume(folder, np.transpose(array, (2, 1, 0)), "DICOM series")
    return RawVolume(data, itk_affine(image), notes=notes)

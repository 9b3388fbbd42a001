"""Reading one of predict.py's inputs as the model's data set holds it: raw volumes (NIfTI, DICOM series or file) with
their geometry, prepared files as stored, and pictures (PNG / JPEG / BMP, DICOM files or frames) as uint8
[H, W, channels]. The file formats themselves are :mod:`datasets.io`'s; here is what predict.py accepts of them.
Every problem with an input is a DataError naming it; what a reader assumed or converted is printed as a note."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from datasets.checks import check_finite
from datasets.errors import DataError
from datasets.io.arrays import read_h5, read_npz
from datasets.io.dicom import dicom_picture, read_dicom_file
from datasets.io.dicom_series import read_dicom_series
from datasets.io.images import read_rgb_image
from datasets.io.nifti import read_nifti
from datasets.io.volumes import RawVolume
from datasets.registry import DatasetSpec

from .inputs import InputItem

__all__ = ["read_raw_volume", "read_prepared", "prepared_volume", "read_picture", "print_notes"]

GREY_MODES = ("1", "L", "LA")  # 8-bit grey PIL modes: repeated in R, G and B for a colour model (noted)
DEEP_GREY_MODES = ("I", "I;16", "F")  # 16-bit / float grey: no 8-bit window to assume, refused


def read_raw_volume(item: InputItem) -> RawVolume:
    """The raw volume of a NIfTI file, a DICOM series folder or a DICOM file; the reader's notes printed."""
    readers = {"nifti": read_nifti, "dicom": read_dicom_series, "dicom_file": read_dicom_file}
    raw = readers[item.format](item.path)
    print_notes(item, raw.notes)
    return raw


def read_prepared(path: Path, spec: DatasetSpec) -> np.ndarray:
    """The image array of a prepared file (key ``spec.reader.image_key``), as stored."""
    key = spec.reader.image_key
    if not path.is_file():
        raise DataError(path, "file does not exist")
    reader = read_npz if path.name.lower().endswith(".npz") else read_h5
    return reader(str(path), (key,))[key]


def prepared_volume(path: Path, spec: DatasetSpec) -> np.ndarray:
    """A prepared volume [D, H, W] (a 2-D [H, W] file is one slice), float32, as the test scripts read it."""
    image = read_prepared(path, spec)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or image.size == 0:
        raise DataError(path, f"prepared image has shape {image.shape}, expected [D, H, W] or [H, W] (grey)")
    if not np.issubdtype(image.dtype, np.number):
        raise DataError(path, f"prepared image is not numeric ({image.dtype})")
    check_finite(str(path), image)
    return image.astype(np.float32, copy=False)


def check_rgb(path: Path, image: np.ndarray, channels: int) -> np.ndarray:
    if image.ndim != 3 or image.shape[-1] != channels or image.size == 0:
        found = f"{image.shape[-1]} channels" if image.ndim == 3 else f"{image.ndim} dimensions"
        raise DataError(path, f"wrong channel count: image {image.shape} has {found}; the model takes "
                              f"[H, W, {channels}] images")
    if image.dtype != np.uint8:
        raise DataError(path, f"image dtype is {image.dtype}, expected uint8 (0..255)")
    return image


def read_image_file(path: Path, channels: int) -> np.ndarray:
    """A PNG / JPEG / BMP as uint8 [H, W, 3], colour modes converted as the preparations convert them (8-bit grey
    repeated in R, G and B, with a note, as grey DICOM is and as BUSI's grey ultrasound is prepared); DataError for
    an unreadable file or a 16-bit / float grey image, whose 8-bit window is unknown."""
    image = read_rgb_image(path)  # decodes the whole file: corrupt or truncated files fail here
    with Image.open(path) as opened:
        mode = opened.mode
        if "A" in opened.getbands() or "transparency" in opened.info:  # RGBA, LA, PA, a palette's transparent index
            if (np.asarray(opened.convert("RGBA").getchannel("A")) < 255).any():
                raise DataError(path, f"image with transparent pixels (mode {mode}): the colour under them is "
                                      f"undefined; flatten it onto a background, or remove the alpha channel")
            tqdm.write(f"note: {path}: its alpha channel (fully opaque) is dropped")
    if mode in DEEP_GREY_MODES:
        raise DataError(path, f"16-bit or float grey image (mode {mode}): the model takes 8-bit {channels}-channel "
                              f"colour images; convert it to 8 bits with the window you want")
    if mode in GREY_MODES:
        tqdm.write(f"note: {path}: grey image (mode {mode}) repeated in R, G and B")
    return check_rgb(path, image, channels)


def read_dicom_picture(item: InputItem, channels: int) -> np.ndarray:
    """A DICOM file, or one frame of a multi-frame file, as uint8 [H, W, channels] (:func:`datasets.io.dicom.
    dicom_picture`: colour as RGB, grey through its window, repeated in R, G and B for a colour model, noted)."""
    picture, notes = dicom_picture(item.path, channels, item.frame)
    print_notes(item, notes)
    return check_rgb(item.path, picture, channels)


def read_picture(item: InputItem, spec: DatasetSpec, channels: int) -> np.ndarray:
    """The picture of an image input (prepared file, PNG / JPEG / BMP, DICOM file or frame) as uint8
    [H, W, channels]."""
    if item.format == "prepared":
        return check_rgb(item.path, read_prepared(item.path, spec), channels)
    if item.format == "dicom_file":
        return read_dicom_picture(item, channels)
    return read_image_file(item.path, channels)


def print_notes(item: InputItem, notes: Sequence[str]) -> None:
    """``note: <path>: ...`` lines of what a reader assumed or converted; the frames of a multi-frame file share
    them, so they are printed with its first frame only."""
    if item.frame:
        return
    where = f"{item.path} (all {item.frames} frames)" if item.frames > 1 else str(item.path)
    for note in notes:
        tqdm.write(f"note: {where}: {note}")

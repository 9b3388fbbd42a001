"""Segment unlabeled scans and images with a trained checkpoint (``predict.py``), for every registered model and
data set: the convention of nnU-Net's ``predict -i INPUT -o OUTPUT``.

The engine names no model and no data set. The model is the checkpoint's (``build_model_from_checkpoint``), the data
set the one it was trained on (``checkpoint['args']['dataset']``, or ``--dataset``), and everything specific to a data
set comes from its spec: the kind (volume / image), channels, class names, the key of the image in its prepared files
(its reader's ``image_key``) and the preprocessing of raw inputs (``spec.raw``, :class:`datasets.registry.RawInput`:
the preparation's own intensity normalisation, the training orientation and slice axes of volumes, the preparation's
resize of images).

Inputs: a file, or a folder of files and DICOM series folders (a folder holding DICOM files is one series):

* NIfTI (``.nii``, ``.nii.gz``) or a DICOM series (volume sets): voxels (x, y, z) + affine -> reoriented to the
  training orientation -> normalised -> slices [D, H, W] -> ``predict_volume`` (the test scripts' inference: cubic
  resize to the network, batched, nearest resize back) -> labels back to the input's voxel order -> NIfTI with the
  input's affine (its header for NIfTI; for DICOM the series' origin, spacing and direction).
* PNG / JPEG / BMP (image sets): uint8 [H, W, 3] -> the preparation's resize to the network's size -> normalised ->
  ``predict_image`` -> labels resized back to H x W (nearest) -> PNG of class indices.
* the prepared formats (``.npz``, ``.npy.h5`` / ``.h5``): the stored image as the test scripts read it (no
  preprocessing but the RGB sets' normalisation, which their evaluation items also get). Volumes are written as the
  test scripts' ``--is_savenii`` writes its predictions (axes reversed, unit spacing); they have no geometry, so
  volumes.csv gives no mL for them.

Outputs in ``--output``: ``<name>.nii.gz`` or ``<name>.png`` (label map), optionally ``<name>_probabilities.npz``
(float16 [K, ...] on the label map's axes, compressed) and ``overlays/<name>.png``, and ``volumes.csv`` (per input
and structure: voxels and mL from the voxel size; pixels for images). Every file is written atomically, the label map
last, so an input whose outputs exist is done: it is skipped unless ``--overwrite``. A bad input is reported in one
line (``error: <path>: <problem>``) and the others are still processed; the run then ends with the list of failures.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
import io
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from datasets import get_dataset, list_datasets
from datasets.common import DataError, check_finite, non_negative_int, positive_int, read_h5, read_npz
from datasets.dicom import DICOM_SUFFIXES, dicom_picture, dicom_volume, has_dicom_prefix, probe_frames
from datasets.dicom import luma as dicom_luma
from datasets.registry import DatasetSpec, RawInput, is_orientation
from datasets.rgb import read_rgb_image
from utils.cli import HelpFormatter, add_dataclass_options, run_cli
from utils.checkpoint import CheckpointError, atomic_write_bytes, atomic_write_text, build_model_from_checkpoint
from datasets.context import ContextProvider, ContextSource, get_context, list_contexts
from datasets.pair_folder import IMAGES_DIR, MASKS_DIR, PairFolder
from utils.context import context_options, model_context, training_pool
from utils.evaluator import (
    NIFTI_AFFINE, check_input_channels, class_labels, item_context, most_foreground_slices, predict_case,
)
from utils.model_input import InputConversion, convert_entries, image_keys, model_input_conversion
from utils.inference import PROBABILITY_ZOOM_ORDER, TTA_MODES, resize_slice, resolve_device
from utils.runlog import CreatedPaths, amp_dtype, removed_on_failure, seed_everything
from utils.visual import display_rgb, image_grid, overlay, save_png, side_by_side

__all__ = ["PredictConfig", "PredictSummary", "InputItem", "find_inputs", "read_nifti", "read_dicom_series",
           "SliceLayout", "predict", "build_predict_parser", "NIFTI_SUFFIXES", "PREPARED_SUFFIXES", "IMAGE_SUFFIXES"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
PREPARED_SUFFIXES = (".npy.h5", ".h5", ".npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
FORMAT_SUFFIXES = {"nifti": NIFTI_SUFFIXES, "prepared": PREPARED_SUFFIXES, "image": IMAGE_SUFFIXES,
                   "dicom_file": DICOM_SUFFIXES}
# 'dicom': a series folder (volume sets); 'dicom_file': one .dcm file, a volume or (image sets) one image per frame
VOLUME_FORMATS, IMAGE_FORMATS = ("nifti", "dicom", "dicom_file", "prepared"), ("image", "dicom_file", "prepared")
FRAME_NAME = "{stem}_frame{number:0{digits}d}"  # the output stem of frame `number` (1-based) of a multi-frame file
STORED_ORIENTATION = "stored"  # --orientation stored: keep the input's voxel order
LABEL_SUFFIX = {"volume": ".nii.gz", "image": ".png"}
PROBABILITIES_SUFFIX = "_probabilities.npz"
OVERLAY_DIR = "overlays"
VOLUMES_CSV = "volumes.csv"
CONTEXT_CSV = "supports.csv"  # support-set models: the pool images each input was segmented with
DEFAULT_OVERLAY_SLICES = 3  # --save_overlays without a number: the 3 slices of a volume with the most foreground
NIFTI_COMPRESSION = 1  # gzip level of the label maps (nibabel's default; label maps compress well at any level)
MM3_PER_ML = 1000.0
# NIfTI spatial units -> millimetres (an unknown unit is taken as mm, the NIfTI convention for scanner space).
MM_PER_UNIT = {"mm": 1.0, "meter": 1000.0, "micron": 0.001, "unknown": 1.0}
GREY_MODES = ("1", "L", "LA")  # 8-bit grey PIL modes: repeated in R, G and B for a colour model (noted)
DEEP_GREY_MODES = ("I", "I;16", "F")  # 16-bit / float grey: no 8-bit window to assume, refused


@dataclass
class PredictConfig:
    """A prediction run (the options of ``predict.py``)."""

    checkpoint: str
    input: str
    output: str
    dataset: str | None = None  # None: the checkpoint's training set
    device: str = "auto"
    amp: str = "none"
    batch_size: int = 16
    tta: str = "none"
    save_probabilities: bool = False
    save_overlays: int = 0
    overwrite: bool = False
    orientation: str | None = None  # None: the data set's training orientation; 'stored' or axis codes otherwise
    seed: int = 2222
    support: str | None = None  # a folder of labelled pairs (images/, masks/): the pool of a support-set model
    context_options: dict = field(default_factory=dict)  # the batch context's options (None: the checkpoint's)


@dataclass
class PredictSummary:
    """What a run did: output label maps written, inputs skipped (outputs present), failures (path, problem)."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------
# Finding the inputs
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputItem:
    """One input: a file or a DICOM series folder, its format and the stem of its output files; for image sets,
    one frame of a multi-frame DICOM file (``frame`` 0-based, of ``frames``)."""

    path: Path
    format: str  # 'nifti', 'dicom' (series folder), 'dicom_file', 'prepared', 'image'
    name: str
    frame: int | None = None
    frames: int = 1


def file_format(path: Path) -> tuple[str, str] | None:
    """(format, output stem) of a file by its suffix (any case), None for other files."""
    lower = path.name.lower()
    for kind, suffixes in FORMAT_SUFFIXES.items():
        for suffix in suffixes:
            if lower.endswith(suffix) and len(lower) > len(suffix):
                return kind, path.name[: -len(suffix)]
    return None


def input_format(path: Path) -> tuple[str, str] | None:
    """(format, output stem) of a file: by suffix, else a DICOM file by its 'DICM' prefix (exports often name
    files by number or UID, without a suffix: the whole name is the stem)."""
    return file_format(path) or (("dicom_file", path.name) if has_dicom_prefix(path) else None)


def file_items(path: Path, kind: str) -> list[InputItem]:
    """The inputs of one file: itself, or for image sets each frame of a multi-frame DICOM file
    (``<stem>_frame001`` ...). A DICOM file whose header shows a problem stays one input, so that the problem is
    reported once, when it is read."""
    found = input_format(path)
    if found is None:
        return []
    item = InputItem(path, *found)
    if item.format != "dicom_file" or kind != "image":
        return [item]
    try:
        frames = probe_frames(path)
    except DataError:
        return [item]
    if frames == 1:
        return [item]
    digits = max(3, len(str(frames)))
    return [InputItem(path, "dicom_file", FRAME_NAME.format(stem=item.name, number=index + 1, digits=digits), index,
                      frames) for index in range(frames)]


def dicom_series_ids(folder: Path) -> list[str]:
    """Series instance UIDs of the DICOM files directly in ``folder`` (GDCM's scan; other files are ignored)."""
    import SimpleITK as sitk  # only DICOM input needs it

    try:
        return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError as exc:
        raise DataError(folder, f"cannot scan the folder for DICOM files: {_first_line(exc)}") from exc


def find_inputs(path: str | os.PathLike, kind: str = "volume",
                exclude: Sequence[str | os.PathLike] = ()) -> tuple[list[InputItem], list[str]]:
    """The inputs under ``path`` for a data set of ``kind`` ('volume' / 'image'), and notes on what was ignored.

    A file is one input (its format by suffix; DICOM also by its 'DICM' prefix), except a multi-frame DICOM file
    for image sets: one input per frame (:func:`file_items`). For volume sets, a folder holding DICOM files is one
    DICOM series. Any other folder holds inputs: its files of a known format (for image sets, DICOM files are
    images) and, for volume sets, each sub-folder as a DICOM series (a sub-folder without one is a failed input,
    reported when read); hidden entries, files of other types and sub-folders of image sets (noted) and the
    ``exclude`` paths (the output folder) are skipped. DataError for a missing path, an unsupported single file or a
    folder without inputs.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "input does not exist")
    if path.is_file():
        items = file_items(path, kind)
        if not items:
            raise DataError(path, f"unsupported file type (expected NIfTI {'/'.join(NIFTI_SUFFIXES)}, prepared "
                                  f"{'/'.join(PREPARED_SUFFIXES)}, image {'/'.join(IMAGE_SUFFIXES)} or DICOM "
                                  f"{'/'.join(DICOM_SUFFIXES)}; a DICOM series is given as its folder)")
        return items, []
    if kind == "volume" and dicom_series_ids(path):
        return [InputItem(path, "dicom", path.resolve().name)], []
    excluded = {Path(p).resolve() for p in exclude}
    items, ignored = [], []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith(".") or entry.resolve() in excluded:
            continue
        if entry.is_dir():
            if kind == "volume":
                items.append(InputItem(entry, "dicom", entry.name))
            else:
                ignored.append(entry.name + "/")
            continue
        found = file_items(entry, kind)
        if not found:
            ignored.append(entry.name)
        items += found
    listed = f"{', '.join(ignored[:5])}{' ...' if len(ignored) > 5 else ''}"
    if not items:
        expected = ("NIfTI, DICOM series / file or prepared (.npz / .npy.h5)" if kind == "volume"
                    else "PNG / JPEG / BMP / DICOM or prepared (.npz)")
        raise DataError(path, f"no {expected} input found" + (f" (only: {listed})" if ignored else " (empty folder)"))
    notes = [f"{path}: ignored {len(ignored)} entries of other types: {listed}"] if ignored else []
    return items, notes


# ----------------------------------------------------------------------------------------------------------------
# Readers: every problem with an input is a DataError naming it
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class RawVolume:
    """A raw volume as stored: voxels (x, y, z), the voxel -> world (RAS) affine, the NIfTI header (None for DICOM),
    the millimetres per unit of the affine, and notes on what the reader assumed or converted (printed)."""

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header | None = None
    mm_per_unit: float = 1.0
    notes: list[str] = field(default_factory=list)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(exc).__name__


def _volume_array(path: Path, data: np.ndarray, what: str) -> np.ndarray:
    """A 3-D grey volume from a file's array: trailing axes of size 1 dropped; DataError for 2-D and 4-D arrays."""
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


def read_nifti(path: Path) -> RawVolume:
    """A NIfTI volume (nibabel; scaling applied) with its affine and header."""
    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel, gzip and numpy raise many types for corrupt or truncated files
        raise DataError(path, f"cannot read NIfTI file (corrupt or truncated): {_first_line(exc)}") from exc
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(path, f"not a NIfTI image ({type(image).__name__})")
    data = _volume_array(path, data, "NIfTI image")
    unit = image.header.get_xyzt_units()[0]
    return RawVolume(data, np.asarray(image.affine, dtype=np.float64), image.header, MM_PER_UNIT.get(unit, 1.0))


def read_dicom_series(folder: Path) -> RawVolume:
    """The one DICOM series in ``folder`` (SimpleITK/GDCM, slices ordered by position, rescale applied), with the
    affine of its geometry (ITK's LPS origin/spacing/direction turned into nibabel's RAS)."""
    import SimpleITK as sitk

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
        raise DataError(folder, f"cannot read the DICOM series (corrupt or truncated file?): {_first_line(exc)}") \
            from exc
    components, notes = image.GetNumberOfComponentsPerPixel(), []
    if components not in (1, 3):
        raise DataError(folder, f"{components} components per pixel: the model takes grey volumes (1 channel)")
    array = sitk.GetArrayFromImage(image)  # [z, y, x] (colour: [z, y, x, 3], YBR converted to RGB by GDCM)
    if components == 3:  # as for a single colour file (datasets.dicom): luma, noted
        array = dicom_luma(array)
        notes.append("colour series converted to grey (BT.601 luma) for the grey model: its values are display "
                     "intensities, not the modality's units (e.g. not CT HU)")
    dimension = image.GetDimension()
    spacing, origin = np.ones(3), np.zeros(3)
    direction = np.eye(3)
    spacing[:dimension], origin[:dimension] = image.GetSpacing(), image.GetOrigin()
    direction[:dimension, :dimension] = np.reshape(image.GetDirection(), (dimension, dimension))
    if dimension == 2:
        array = array[None]
        direction[:, 2] = np.cross(direction[:, 0], direction[:, 1])
    lps = np.eye(4)
    lps[:3, :3], lps[:3, 3] = direction * spacing, origin
    data = _volume_array(folder, np.transpose(array, (2, 1, 0)), "DICOM series")
    return RawVolume(data, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, notes=notes)


def read_dicom_file(path: Path) -> RawVolume:
    """One DICOM file as a volume (:func:`datasets.dicom.dicom_volume`: a single frame is a volume of one slice, a
    multi-frame file the volume of its frames; the affine from its geometry attributes, assumptions noted)."""
    volume = dicom_volume(path)
    return RawVolume(_volume_array(path, volume.data, "DICOM image"), volume.affine, notes=volume.notes)


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


def _check_rgb(path: Path, image: np.ndarray, channels: int) -> np.ndarray:
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
    if mode in DEEP_GREY_MODES:
        raise DataError(path, f"16-bit or float grey image (mode {mode}): the model takes 8-bit {channels}-channel "
                              f"colour images; convert it to 8 bits with the window you want")
    if mode in GREY_MODES:
        tqdm.write(f"note: {path}: grey image (mode {mode}) repeated in R, G and B")
    return _check_rgb(path, image, channels)


def read_dicom_picture(item: InputItem, channels: int) -> np.ndarray:
    """A DICOM file, or one frame of a multi-frame file, as uint8 [H, W, channels] (:func:`datasets.dicom.
    dicom_picture`: colour as RGB, grey through its window, repeated in R, G and B for a colour model, noted)."""
    picture, notes = dicom_picture(item.path, channels, item.frame)
    print_notes(item, notes)
    return _check_rgb(item.path, picture, channels)


def read_picture(item: InputItem, spec: DatasetSpec, channels: int) -> np.ndarray:
    """The picture of an image input (prepared file, PNG / JPEG / BMP, DICOM file or frame) as uint8
    [H, W, channels]."""
    if item.format == "prepared":
        return _check_rgb(item.path, read_prepared(item.path, spec), channels)
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


# ----------------------------------------------------------------------------------------------------------------
# Geometry: the raw voxel order <-> the training layout [D, H, W]
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SliceLayout:
    """From a raw volume's voxels (x, y, z) to the prepared layout [D, H, W] and back: a reorientation to the
    training orientation (nibabel orientation transform; None keeps the stored voxel order), then ``slice_axes``."""

    transform: np.ndarray | None
    inverse: np.ndarray | None
    slice_axes: tuple[int, int, int]

    @classmethod
    def of(cls, affine: np.ndarray, orientation: str | None, slice_axes: Sequence[int],
           path: str | os.PathLike = "") -> SliceLayout:
        """The layout of a volume with ``affine`` for a model trained in ``orientation`` (axis codes or None)."""
        if orientation is None:
            return cls(None, None, tuple(slice_axes))
        target = nib.orientations.axcodes2ornt(tuple(orientation))
        current = nib.orientations.io_orientation(affine)
        if np.isnan(current).any():
            raise DataError(path, f"cannot tell the voxel axes' directions from the affine {affine[:3].tolist()}")
        return cls(nib.orientations.ornt_transform(current, target), nib.orientations.ornt_transform(target, current),
                   tuple(slice_axes))

    def forward(self, data: np.ndarray) -> np.ndarray:
        """(x, y, z) voxels -> [D, H, W] in the training orientation."""
        if self.transform is not None:
            data = nib.orientations.apply_orientation(data, self.transform)
        return np.ascontiguousarray(np.transpose(data, self.slice_axes))

    def backward(self, array: np.ndarray) -> np.ndarray:
        """[D, H, W] (or [K, D, H, W]) in the training layout -> the input's voxel order (x, y, z) (or [K, x, y, z])."""
        leading = array.ndim - 3
        array = np.transpose(array, (*range(leading), *(leading + axis for axis in np.argsort(self.slice_axes))))
        if self.inverse is not None:
            array = np.moveaxis(array, range(leading), range(3, 3 + leading))  # orientation acts on the first axes
            array = nib.orientations.apply_orientation(array, self.inverse)
            array = np.moveaxis(array, range(3, 3 + leading), range(leading))
        return np.ascontiguousarray(array)


def orientation_affine(orientation: str | None) -> np.ndarray:
    """Unit-spacing affine whose voxel axes point along ``orientation`` (identity for None)."""
    affine = np.eye(4)
    if orientation is not None:
        affine[:3, :3] = 0
        for axis, (world, flip) in enumerate(nib.orientations.axcodes2ornt(tuple(orientation))):
            affine[int(world), axis] = flip
    return affine


# ----------------------------------------------------------------------------------------------------------------
# Output files
# ----------------------------------------------------------------------------------------------------------------
def label_dtype(num_classes: int) -> type:
    return np.uint8 if num_classes <= 256 else np.int16


def label_nifti_bytes(labels: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header | None,
                      num_classes: int) -> bytes:
    """Gzipped NIfTI (-1, or -2 like the input) of a label map with ``affine``: the input's header (qform / sform
    codes, units, ...) when given, else scanner-space codes in mm; integer voxels, no scaling, intent 'label'."""
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
    return gzip.compress(image.to_bytes(), compresslevel=NIFTI_COMPRESSION, mtime=0)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def probabilities_bytes(probabilities: np.ndarray, class_names: Sequence[str]) -> bytes:
    """Compressed ``.npz``: ``probabilities`` float16 [K, ...] and ``class_names`` (background first)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, probabilities=probabilities.astype(np.float16),
                        class_names=np.array(["background", *class_names]))
    return buffer.getvalue()


def volume_rows(name: str, labels: np.ndarray, class_names: Sequence[str], voxel_mm3: float | None,
                kind: str) -> list[list[str]]:
    """volumes.csv rows of one input: per foreground class its voxel (pixel) count and, for a volume with a known
    voxel size, its volume in mL."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=len(class_names) + 1)
    rows = []
    for index, class_name in enumerate(class_names, start=1):
        count = int(counts[index]) if index < len(counts) else 0
        if kind == "volume":
            volume = "" if voxel_mm3 is None else f"{count * voxel_mm3 / MM3_PER_ML:.6g}"
            rows.append([name, class_name, str(count), volume])
        else:
            rows.append([name, class_name, str(count)])
    return rows


def volumes_csv_text(rows: Sequence[Sequence[str]], kind: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", "class", "voxels", "volume_ml"] if kind == "volume" else ["case", "class", "pixels"])
    writer.writerows(rows)
    return buffer.getvalue()


def voxel_volume_mm3(affine: np.ndarray, mm_per_unit: float = 1.0) -> float:
    """Volume of one voxel in mm^3: |det| of the affine's 3x3 part (in the header's spatial unit, converted)."""
    return float(abs(np.linalg.det(affine[:3, :3]))) * mm_per_unit ** 3


def existing_labels(path: Path, kind: str) -> tuple[np.ndarray, float | None]:
    """A label map written earlier (a skipped input) and its voxel volume in mm^3 (None for PNGs)."""
    try:
        if kind == "image":
            with Image.open(path) as image:
                return np.asarray(image), None
        image = nib.load(path)
        unit = image.header.get_xyzt_units()[0]
        return np.asanyarray(image.dataobj), voxel_volume_mm3(image.affine, MM_PER_UNIT.get(unit, 1.0))
    except Exception as exc:  # noqa: BLE001 - reported as a problem of that file
        raise DataError(path, f"existing output cannot be read (use --overwrite to redo it): {_first_line(exc)}") \
            from exc


# ----------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Predictor:
    """The model, its data set's spec and the run's options: predicts and writes one input at a time."""

    config: PredictConfig
    model: torch.nn.Module
    spec: DatasetSpec
    class_names: list[str]
    device: torch.device
    orientation: str | None
    output: Path
    conversion: InputConversion | None = None  # the data set's images -> the model's input (utils.model_input)
    queries: Any = None  # a support-set model's context of single images (ContextProvider.for_queries), or None
    context_keys: tuple[str, ...] = ("image",)  # entries the conversion applies to
    context_rows: dict[str, list[str]] = field(default_factory=dict)  # input -> its context's pool images

    @property
    def kind(self) -> str:
        return self.spec.kind

    def paths(self, item: InputItem) -> dict[str, Path]:
        """The output files of an input that this run writes (the label map last)."""
        paths = {}
        if self.config.save_probabilities:
            paths["probabilities"] = self.output / f"{item.name}{PROBABILITIES_SUFFIX}"
        if self.config.save_overlays:
            paths["overlay"] = self.output / OVERLAY_DIR / f"{item.name}.png"
        paths["labels"] = self.output / f"{item.name}{LABEL_SUFFIX[self.kind]}"
        return paths

    def infer(self, image: np.ndarray, context: dict | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """(labels, probabilities or None) of a volume [D, H, W] or image [C, H, W] in the data set's normalisation
        (converted to the model's input here) with its context entries (e.g. supports; None: none)."""
        entries = convert_entries({"image": image, **(context or {})}, self.conversion, self.context_keys)
        image = entries.pop("image")
        result = predict_case(self.model, image, kind=self.kind, img_size=self.model.img_size,
                              batch_size=self.config.batch_size, device=self.device, amp=amp_dtype(self.config.amp),
                              context=item_context(entries, self.model, self.kind) if entries else None,
                              tta=self.config.tta, return_probabilities=self.config.save_probabilities)
        return result if self.config.save_probabilities else (result, None)

    def check_format(self, item: InputItem) -> None:
        allowed = VOLUME_FORMATS if self.kind == "volume" else IMAGE_FORMATS
        if item.format in allowed:
            return
        what = {"nifti": "a NIfTI volume", "dicom": "a DICOM series folder", "image": "a 2-D image file",
                "prepared": "a prepared file", "dicom_file": "a DICOM file"}[item.format]
        expected = ("volumes (NIfTI, DICOM series or file, prepared .npy.h5 / .npz)" if self.kind == "volume"
                    else "2-D colour images (PNG / JPEG / BMP, DICOM files, prepared .npz)")
        raise DataError(item.path, f"{what}, but the {self.spec.name} model segments {expected}")

    def raw_input(self, item: InputItem) -> RawInput:
        """The data set's preprocessing of raw inputs; DataError when it declares none."""
        if self.spec.raw is None:
            raise DataError(item.path, f"data set {self.spec.name} declares no preprocessing of raw inputs "
                                       f"(DatasetSpec.raw); give its prepared format (.npz / .npy.h5)")
        return self.spec.raw

    def run_one(self, item: InputItem, created: CreatedPaths) -> tuple[list[list[str]], str]:
        """Predict one input and write its outputs; returns (volumes.csv rows, a short report)."""
        if self.kind == "volume":
            return self.volume(item, created)
        return self.image(item, created)

    # -- volumes
    def volume(self, item: InputItem, created: CreatedPaths) -> tuple[list[list[str]], str]:
        if item.format == "prepared":
            volume = prepared_volume(item.path, self.spec)
            layout, affine, header, voxel_mm3 = None, None, None, None
        else:
            raw_input = self.raw_input(item)
            raw = read_raw_volume(item)
            layout = SliceLayout.of(raw.affine, self.orientation, raw_input.slice_axes, item.path)
            volume = layout.forward(np.asarray(raw_input.normalize(raw.data), dtype=np.float32))
            affine, header, voxel_mm3 = raw.affine, raw.header, voxel_volume_mm3(raw.affine, raw.mm_per_unit)
        start = time.perf_counter()
        labels, probabilities = self.infer(volume)
        seconds = time.perf_counter() - start
        paths = self.paths(item)
        if layout is None:  # prepared: written as the test scripts' --is_savenii writes predictions
            output, affine = labels.T, NIFTI_AFFINE
            output_probabilities = None if probabilities is None else np.moveaxis(probabilities.T, -1, 0)
        else:
            output = layout.backward(labels)
            output_probabilities = None if probabilities is None else layout.backward(probabilities)
        if output_probabilities is not None:
            atomic_write_bytes(created.track(paths["probabilities"]),
                               probabilities_bytes(output_probabilities, self.class_names))
        if "overlay" in paths:
            count = self.config.save_overlays
            rows = [[display_rgb(volume[index]), overlay(volume[index], labels[index], self.model.num_classes)]
                    for index in most_foreground_slices(labels, count)]
            created.mkdir(paths["overlay"].parent)
            save_png(created.track(paths["overlay"]), image_grid(rows))
        atomic_write_bytes(created.track(paths["labels"]),
                           label_nifti_bytes(output, affine, header, self.model.num_classes))
        report = f"{item.name}: {tuple(output.shape)} -> {paths['labels'].name} (network {seconds:.1f} s)"
        return volume_rows(item.name, labels, self.class_names, voxel_mm3, "volume"), report

    # -- images
    def image(self, item: InputItem, created: CreatedPaths) -> tuple[list[list[str]], str]:
        raw_input = self.raw_input(item)
        channels = self.spec.in_chans  # read as the data set holds images; the model's input is converted from it
        picture = read_picture(item, self.spec, channels)
        height, width = picture.shape[:2]
        size = self.model.img_size
        resized = item.format != "prepared" and raw_input.resize is not None and (height, width) != (size, size)
        network_image = raw_input.resize(picture, (size, size)) if resized else picture
        context, context_names = self.query_context(item, picture)
        start = time.perf_counter()
        # (a writable copy: PIL's arrays are read-only, which torch.as_tensor warns about)
        labels, probabilities = self.infer(np.asarray(raw_input.normalize(np.array(network_image)), dtype=np.float32),
                                           context)
        seconds = time.perf_counter() - start
        if resized:
            labels = np.asarray(raw_input.resize_label(labels.astype(np.uint8), (height, width)))
            if probabilities is not None:
                probabilities = np.stack([resize_slice(p, (height, width), PROBABILITY_ZOOM_ORDER)
                                          for p in probabilities])
        paths = self.paths(item)
        if probabilities is not None:
            atomic_write_bytes(created.track(paths["probabilities"]),
                               probabilities_bytes(probabilities, self.class_names))
        if "overlay" in paths:
            created.mkdir(paths["overlay"].parent)
            num_classes = self.model.num_classes
            panel = side_by_side(display_rgb(picture), overlay(picture, labels, num_classes))
            if context_names:  # the supports (network size, with their masks) in a second row
                pairs = self.queries.context_pairs(context)
                panel = image_grid([[panel], [side_by_side(*(overlay(image, label, num_classes)
                                                             for image, label in pairs))]])
            save_png(created.track(paths["overlay"]), panel)
        atomic_write_bytes(created.track(paths["labels"]),
                           png_bytes(labels.astype(label_dtype(self.model.num_classes))))
        report = f"{item.name}: {height}x{width} -> {paths['labels'].name} (network {seconds:.2f} s)"
        if context_names:
            self.context_rows[item.name] = context_names
        return volume_rows(item.name, labels, self.class_names, None, "image"), report

    def query_context(self, item: InputItem, picture: np.ndarray) -> tuple[dict, list[str]]:
        """(context entries, names of the pool images in it) of one input image; none without a context."""
        if self.queries is None:
            return {}, []
        return self.queries.context(picture, str(item.path))

    def skipped_rows(self, item: InputItem) -> list[list[str]]:
        """volumes.csv rows of an input whose outputs exist, from its label map."""
        labels, voxel_mm3 = existing_labels(self.paths(item)["labels"], self.kind)
        if item.format == "prepared":
            voxel_mm3 = None
        return volume_rows(item.name, labels, self.class_names, voxel_mm3, self.kind)


def query_context(config: PredictConfig, provider: ContextProvider, ckpt: dict, spec: DatasetSpec,
                  model: torch.nn.Module, device: torch.device):
    """The model's context of single input images (a support-set model: k supports per image from a pool): the
    pool is ``--support`` (a folder of labelled pairs) or else the checkpoint's training split; the options are the
    checkpoint's, overridden by those given. One error line for a bad pool, before anything is written."""
    if provider.for_queries is None:
        raise CheckpointError(config.checkpoint, f"{model.arch} needs a {provider.name} context, which cannot be "
                                                 f"built for single images")
    trained_with = ckpt.get("args") or {}
    options = context_options(provider, trained_with, config.context_options)
    hint = f"give --support DIR ({IMAGES_DIR}/<stem>.png|jpg|bmp + {MASKS_DIR}/<stem>.png)"
    if config.support:
        pool = ContextSource(spec, PairFolder(config.support, model.num_classes), None)
    else:
        try:
            pool = training_pool(provider, options, trained_with, config.checkpoint, model.num_classes, config.seed,
                                 hint=hint)
        except DataError as exc:
            raise DataError(exc.path, f"{exc.problem} (the checkpoint's training pool is not here; {hint})") from exc
    return provider.for_queries(pool, options, img_size=model.img_size,
                                seed=int(trained_with.get("seed", config.seed)), device=str(device))


def context_csv_text(path: Path, rows: dict[str, list[str]]) -> str:
    """supports.csv: ``input, rank, pool image`` per input, rows of earlier runs (skipped inputs) kept."""
    kept: dict[str, list[str]] = {}
    if path.exists():
        with open(path, newline="", encoding="utf-8") as handle:
            for record in csv.DictReader(handle):
                kept.setdefault(record["input"], []).append(record["pool_image"])
    kept.update(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["input", "rank", "pool_image"])
    for name, names in kept.items():
        writer.writerows([name, rank, pool_image] for rank, pool_image in enumerate(names, start=1))
    return buffer.getvalue()


def checkpoint_dataset(config: PredictConfig, ckpt: dict, notes: list[str]) -> DatasetSpec:
    """The data set whose preprocessing applies: ``--dataset`` (overriding the checkpoint's) or the checkpoint's."""
    args = ckpt.get("args") or {}
    trained_on = args.get("dataset") if isinstance(args, dict) else None
    name = config.dataset or trained_on
    if name is None:
        raise CheckpointError(config.checkpoint, f"the checkpoint names no data set (args.dataset): give --dataset "
                                                 f"({', '.join(list_datasets())})")
    spec = get_dataset(name)
    if trained_on is not None and config.dataset is not None and get_dataset(trained_on).name != spec.name:
        notes.append(f"--dataset {spec.name}: preprocessing of {spec.name}, although the checkpoint was trained on "
                     f"{trained_on}")
    return spec


def predict(config: PredictConfig) -> PredictSummary:
    """Segment every input of ``config.input`` into ``config.output`` (see the module docstring).

    Raises (one-line errors) for a bad checkpoint, data set, option or input path; a bad input file is recorded in
    the returned summary's ``failed`` (and printed), the other inputs are still processed.
    """
    summary = PredictSummary()
    if config.orientation not in (None, STORED_ORIENTATION) and not is_orientation(config.orientation):
        raise ValueError(f"--orientation must be '{STORED_ORIENTATION}' or 3 axis codes such as LPS or RAS, got "
                         f"{config.orientation!r}")
    seed_everything(config.seed, True)
    device = resolve_device(config.device)
    output = Path(config.output)
    if not Path(config.input).exists():  # before the (slow) checkpoint load
        raise DataError(config.input, "input does not exist")
    model, ckpt = build_model_from_checkpoint(config.checkpoint, map_location="cpu")
    spec = checkpoint_dataset(config, ckpt, summary.notes)
    check_input_channels(config.checkpoint, model, spec.name)
    items, notes = find_inputs(config.input, spec.kind, exclude=[output] + ([config.support] if config.support
                                                                           else []))
    summary.notes += notes
    conversion = model_input_conversion(spec, model)
    if conversion is not None:
        summary.notes.append(f"{model.arch} input: {conversion.describe()}")
    provider = model_context(model.arch)
    queries = None
    if provider is not None:  # before the output folder exists: a bad pool writes nothing
        queries = query_context(config, provider, ckpt, spec, model, device)
        summary.notes.append(f"{provider.name}: {queries.info}")
    elif config.support:
        raise ValueError(f"--support {config.support}: {model.arch} takes no support set")
    model.to(device)
    orientation = spec.raw.orientation if spec.raw is not None else None
    if config.orientation is not None:
        orientation = None if config.orientation == STORED_ORIENTATION else config.orientation
    predictor = Predictor(config, model, spec, class_labels(spec.class_names, model.num_classes), device,
                          orientation, output, conversion, queries, image_keys(provider))
    output.mkdir(parents=True, exist_ok=True)
    for note in summary.notes:
        print(f"note: {note}")
    print(f"predicting {len(items)} input(s) with {config.checkpoint} ({model.arch}, {spec.name}, img_size "
          f"{model.img_size}, device {device}, tta {config.tta}, orientation {orientation or 'as stored'}) -> {output}")

    rows: list[list[str]] = []
    used: dict[str, Path] = {}
    for item in tqdm(items, desc="predict", unit="input", disable=None):
        try:
            if item.name in used:
                raise DataError(item.path, f"output name '{item.name}' already used by {used[item.name]}")
            used[item.name] = item.path
            predictor.check_format(item)
            if not config.overwrite and all(path.exists() for path in predictor.paths(item).values()):
                rows += predictor.skipped_rows(item)
                summary.skipped.append(str(item.path))
                continue
            with removed_on_failure() as created:
                item_rows, report = predictor.run_one(item, created)
            rows += item_rows
            summary.written.append(str(predictor.paths(item)["labels"]))
            tqdm.write(report)
        except DataError as err:
            summary.failed.append((str(err.path), err.problem))
            sys.stdout.flush()
            tqdm.write(f"error: {err.path}: {' '.join(err.problem.split())}", file=sys.stderr)
    if rows or not (output / VOLUMES_CSV).exists():
        atomic_write_text(output / VOLUMES_CSV, volumes_csv_text(rows, spec.kind))
    if predictor.context_rows:
        atomic_write_text(output / CONTEXT_CSV, context_csv_text(output / CONTEXT_CSV, predictor.context_rows))
    print(f"{len(summary.written)} written, {len(summary.skipped)} skipped (outputs exist; --overwrite redoes them), "
          f"{len(summary.failed)} failed -> {output}")
    if summary.failed:
        sys.stdout.flush()
        print(f"{len(summary.failed)} input(s) failed:", file=sys.stderr)
        for path, problem in summary.failed:
            print(f"  {path}: {' '.join(problem.split())}", file=sys.stderr)
    return summary


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------
class PredictParser(argparse.ArgumentParser):
    """``predict.py``'s parser; :meth:`parse_config` returns a :class:`PredictConfig`."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.context_option_names: list[str] = []  # the batch contexts' options, added by build_predict_parser

    def parse_config(self, args: Sequence[str] | None = None) -> PredictConfig:
        parsed = self.parse_args(args)
        names = {item.name for item in dataclasses.fields(PredictConfig)}
        options = {name: getattr(parsed, name) for name in self.context_option_names}
        return PredictConfig(**{key: value for key, value in vars(parsed).items() if key in names},
                             context_options=options)


def build_predict_parser() -> PredictParser:
    """The options of ``predict.py``."""
    parser = PredictParser(description="Segment NIfTI volumes, DICOM series or images with a trained checkpoint of "
                                       "any registered model and data set.",
                           formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by train.py / train_<set>.py")
    parser.add_argument("--input", "-i", required=True,
                        help="a file (.nii/.nii.gz, .npz/.npy.h5, .png/.jpg/.bmp), a DICOM series folder, or a folder "
                             "of those")
    parser.add_argument("--output", "-o", required=True, help="output folder")
    parser.add_argument("--dataset", default=None, type=str.lower,
                        help=f"data set whose preprocessing applies ({', '.join(list_datasets())}); default: the "
                             f"checkpoint's training set")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none", help="mixed precision")
    parser.add_argument("--batch_size", "--batch-size", dest="batch_size", type=positive_int, default=16,
                        help="slices per inference batch (images: one at a time)")
    parser.add_argument("--tta", choices=TTA_MODES, default="none",
                        help="test-time augmentation: flip = average the softmax probabilities over the input and its "
                             "mirror images (4 forwards)")
    parser.add_argument("--save_probabilities", "--save-probabilities", action="store_true",
                        help=f"also write <name>{PROBABILITIES_SUFFIX} (float16 [K, ...], compressed)")
    parser.add_argument("--save_overlays", "--save-overlays", type=non_negative_int, nargs="?",
                        const=DEFAULT_OVERLAY_SLICES, default=0, metavar="N",
                        help=f"also write {OVERLAY_DIR}/<name>.png: image | prediction of the N slices with the most "
                             f"foreground (images: the image; N defaults to {DEFAULT_OVERLAY_SLICES})")
    parser.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs exist")
    parser.add_argument("--orientation", default=None,
                        help="volumes: the voxel orientation the model was trained in, as axis codes (e.g. LPS), or "
                             f"'{STORED_ORIENTATION}' to keep each input's voxel order (default: the data set's)")
    parser.add_argument("--support", default=None, metavar="DIR",
                        help=f"support-set models (MatchSeg, UniverSeg): a folder of labelled examples, "
                             f"{IMAGES_DIR}/<stem>.png|jpg|bmp with {MASKS_DIR}/<stem>.png (binary 0/255 or class "
                             f"indices), from which each input's supports are chosen (default: the checkpoint's "
                             f"training split, when its files are here)")
    for name in list_contexts():
        provider = get_context(name)
        group = parser.add_argument_group(f"batch context: {name} ({provider.description})")
        parser.context_option_names += add_dataclass_options(
            group, dataclasses.fields(provider.options), None, " (default: the checkpoint's)")
    return parser


def main(argv: Sequence[str] | None = None, entry: Callable[[PredictConfig], PredictSummary] = predict) -> int:
    """``predict.py``: exit 0 when every input was segmented (or skipped), 1 when some failed, 2 for a bad
    checkpoint / option / input path (one ``error:`` line)."""
    config = build_predict_parser().parse_config(argv)
    result: list[PredictSummary] = []
    status = run_cli(lambda c: result.append(entry(c)), config)
    if status:
        return status
    return 1 if result[0].failed else 0

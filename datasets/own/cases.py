"""One case of a raw own data set: loaded, checked (each problem one DataError naming the file), prepared and
written in the prepared layout. Runs in the preparation's worker processes, one case at a time, so memory is
bounded by the largest case.

Tolerances: the channel files and the label of a case must have equal voxel shapes and affines equal within
:data:`AFFINE_RTOL` (relative) and :data:`AFFINE_ATOL` mm (absolute), element by element.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..checks import check_finite
from ..errors import DataError
from ..io.images import open_image, read_mask_image
from ..rgb import resize_image, resize_label, write_rgb_item
from ..synapse import write_synapse_test_case, write_synapse_train_case
from .descriptor import IMAGE_DIR_NAME, TRAIN_DIR_NAME, VOLUME_DIR_NAME, ChannelIntensity
from .formats import RawCase, RawSet
from .geometry import LABEL_ORDER, prepare_geometry
from .intensity import foreground_sample
from .scan import normalized_volume
from .volumes import read_volume_file

__all__ = ["AFFINE_RTOL", "AFFINE_ATOL", "Plan", "load_volume_case", "load_image_case", "label_lookup",
           "prepare_case", "ct_samples", "mask_values"]

AFFINE_RTOL, AFFINE_ATOL = 1e-4, 1e-3
UINT8_MAX = 255


@dataclass(frozen=True)
class Plan:
    """What every case of one preparation shares: the label values (prepared class i = ``label_values[i]``), the
    channels' intensities, the volume geometry (slice axes, in-plane target spacing) or the image size, the output
    folder, and whether folder masks are 0/255."""

    label_values: tuple[int, ...]
    intensities: tuple[ChannelIntensity, ...] = ()
    slice_axes: tuple[int, int, int] | None = None
    target_spacing: tuple[float, float] | None = None
    image_size: tuple[int, int] | None = None
    out: str = ""
    binary_255: bool = False
    channels: tuple[int, ...] | None = None  # volume sets: the channels kept (indices of dataset.json's), None all

    def kept(self, channels: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The kept channels of a case's channels."""
        return list(channels) if self.channels is None else [channels[index] for index in self.channels]


def _spatial(path: str, data: np.ndarray, what: str) -> np.ndarray:
    """A 3-D array (trailing axes of size 1 dropped); DataError for other dimensions."""
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(path, f"{data.ndim}-D {what} {data.shape}: expected one 3-D volume"
                              + (" (a label map is one 3-D volume)" if what == "label" else
                                 " per channel file (_0000, _0001, ...)"))
    return data


def _same_grid(path: str, shape, affine, ref_path: str, ref_shape, ref_affine, what: str) -> None:
    if tuple(shape) != tuple(ref_shape):
        raise DataError(path, f"{what} shape {tuple(shape)} differs from {ref_path}'s {tuple(ref_shape)}")
    if not np.allclose(affine, ref_affine, rtol=AFFINE_RTOL, atol=AFFINE_ATOL):
        worst = float(np.abs(np.asarray(affine) - np.asarray(ref_affine)).max())
        raise DataError(path, f"{what} affine differs from {ref_path}'s by up to {worst:.4g} (tolerance "
                              f"{AFFINE_ATOL} mm + {AFFINE_RTOL} relative)")


def _checked_label(path: str, label: np.ndarray, declared: Sequence[int], where: str) -> np.ndarray:
    if not np.issubdtype(label.dtype, np.number):
        raise DataError(path, f"non-numeric label values ({label.dtype})")
    if np.issubdtype(label.dtype, np.floating) and not np.array_equal(label, np.round(label)):
        raise DataError(path, "label contains non-integer values")
    label = np.rint(label).astype(np.int64) if not np.issubdtype(label.dtype, np.integer) else label
    found = np.unique(label)
    extra = sorted(set(found.tolist()) - set(declared))
    if extra:
        raise DataError(path, f"label values {extra[:5]} not declared in {where} (declared: {list(declared)})")
    return label


def load_volume_case(case: RawCase, raw: RawSet) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(channels (x, y, z) each, label int (x, y, z), affine) of one volume case, checked."""
    channels, affine, first = [], None, case.images[0]
    for path in case.images:
        data, file_affine = read_volume_file(path)
        if raw.format == "msd" and data.ndim == 4:
            parts = [data[..., index] for index in range(data.shape[3])]
        else:
            parts = [_spatial(path, data, "image")]
        if affine is None:
            affine, shape = file_affine, parts[0].shape
        for part in parts:
            _same_grid(path, part.shape, file_affine, first, shape, affine, "image")
            if not np.issubdtype(part.dtype, np.number) or np.iscomplexobj(part):
                raise DataError(path, f"non-numeric or complex voxels ({part.dtype})")
            check_finite(path, part)
        channels += parts
    if len(channels) != len(raw.channel_names):
        raise DataError(first, f"{len(channels)} channel(s), dataset.json declares {len(raw.channel_names)} "
                               f"({', '.join(raw.channel_names)})")
    label, label_affine = read_volume_file(case.label)
    label = _spatial(case.label, label, "label")
    _same_grid(case.label, label.shape, label_affine, first, shape, affine, "label")
    return channels, _checked_label(case.label, label, list(raw.labels), "dataset.json labels"), affine


def _picture_channels(path: str) -> np.ndarray:
    """A 2-D file as [H, W, C] (C = 1 grey, 3 colour; 16-bit grey scaled to 8 bits by its range)."""
    image = open_image(path)
    if image.mode in ("P", "1", "LA", "PA"):
        image = image.convert("L")
    elif image.mode in ("RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = array.astype(np.float64)
        low, high = float(array.min()), float(array.max())
        array = np.zeros(array.shape, np.uint8) if high <= low else \
            np.rint((array - low) * (UINT8_MAX / (high - low))).astype(np.uint8)
    return array[..., None] if array.ndim == 2 else array


def load_image_case(case: RawCase, raw: RawSet) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 [H, W, 3], label of raw values [H, W]) of one 2-D case, checked (grey replicated to RGB)."""
    parts = [_picture_channels(path) for path in case.images]
    first = case.images[0]
    for path, part in zip(case.images, parts):
        if part.shape[:2] != parts[0].shape[:2]:
            raise DataError(path, f"image shape {part.shape[:2]} differs from {first}'s {parts[0].shape[:2]}")
    image = np.concatenate(parts, axis=-1)
    channels = image.shape[-1]
    if raw.format == "nnunet" and channels != len(raw.channel_names):
        raise DataError(first, f"{channels} channel(s), dataset.json declares {len(raw.channel_names)} "
                               f"({', '.join(raw.channel_names)})")
    if channels not in (1, 3):
        raise DataError(first, f"{channels} channels: 2-D sets are grey (1) or RGB (3)")
    if channels == 1:
        image = np.repeat(image, 3, axis=-1)
    if raw.format == "folder":
        label = _folder_mask(case.label)
    else:
        label = _spatial_2d(case.label, np.asarray(open_image(case.label)))
    if label.shape != image.shape[:2]:
        raise DataError(case.label, f"label shape {label.shape} differs from image {first}'s {image.shape[:2]}")
    return image, label


def _folder_mask(path: str) -> np.ndarray:
    """A folder's mask: a palette PNG's indices (class-index masks saved with a colour palette), else the grey
    value (of a 3-channel mask, the first channel)."""
    image = open_image(path)
    return np.asarray(image) if image.mode == "P" else read_mask_image(path)


def _spatial_2d(path: str, label: np.ndarray) -> np.ndarray:
    if label.ndim != 2:
        raise DataError(path, f"label of shape {label.shape}: a 2-D label map is one grey image of class values")
    return label


def mask_values(case: RawCase, raw: RawSet) -> set[int]:
    """The values of one 2-D case's label file (folder masks: grey, first channel)."""
    label = _folder_mask(case.label) if raw.format == "folder" else \
        _spatial_2d(case.label, np.asarray(open_image(case.label)))
    return set(np.unique(label).tolist())


def label_lookup(label_values: Sequence[int]) -> np.ndarray:
    """Raw label value -> prepared class index (values not declared map to 0, but are refused before)."""
    lookup = np.zeros(max(label_values) + 1, dtype=np.uint8 if len(label_values) <= 256 else np.int16)
    for index, value in enumerate(label_values):
        lookup[value] = index
    return lookup


def ct_samples(case: RawCase, raw: RawSet, plan: Plan, seed: int, case_index: int) -> list[np.ndarray]:
    """Foreground intensity samples of each ``ct`` channel of one training case (empty arrays for others)."""
    channels, label, _ = load_volume_case(case, raw)
    channels = plan.kept(channels)
    return [foreground_sample(data, label, (seed, case_index, index)) if intensity.scheme == "ct" else np.zeros(0)
            for index, (data, intensity) in enumerate(zip(channels, plan.intensities))]


def _folder_label(path: str, label: np.ndarray, plan: Plan) -> np.ndarray:
    if plan.binary_255:
        label = (label == UINT8_MAX).astype(np.int64) * 1
    count = len(plan.label_values)
    if int(label.max()) >= count:
        raise DataError(path, f"mask values up to {int(label.max())} beyond the class count {count} "
                              f"(classes 0..{count - 1}; binary masks are 0/255)")
    return label


def prepare_case(case: RawCase, raw: RawSet, plan: Plan, split: str) -> tuple[dict, list[str]]:
    """Load, check, prepare and write one case under ``plan.out``; returns (its geometry fields, list entries)."""
    lookup = label_lookup(plan.label_values)
    if raw.kind == "image":
        image, label = load_image_case(case, raw)
        if raw.format == "folder":
            label = _folder_label(case.label, label, plan)
        else:
            label = lookup[_checked_label(case.label, label, list(raw.labels), "dataset.json labels")]
        size = tuple(plan.image_size)
        entry = write_rgb_item(os.path.join(plan.out, IMAGE_DIR_NAME), case.name, resize_image(image, size),
                               resize_label(np.asarray(label, dtype=np.uint8), size))
        return dict(shape=tuple(image.shape[:2]), prepared_shape=size), [entry]
    channels, label, affine = load_volume_case(case, raw)
    image, geometry = normalized_volume(plan.kept(channels), affine, plan.intensities, plan.slice_axes,
                                        plan.target_spacing, case.images[0])
    prepared_label, _ = prepare_geometry(lookup[label], affine, plan.slice_axes, plan.target_spacing, LABEL_ORDER)
    if split == "train":
        entries = write_synapse_train_case(os.path.join(plan.out, TRAIN_DIR_NAME), case.name, image, prepared_label)
    else:
        entries = [write_synapse_test_case(os.path.join(plan.out, VOLUME_DIR_NAME), case.name, image,
                                           prepared_label)]
    return geometry, entries

"""Shared machinery of the 2-D colour data sets (ISIC-2018, SegPC-2021, BUSI, BUS, GlaS, HAM10000).

Prepared format (written by ``datasets.prepare.<set>`` and the phantoms):
one uncompressed ``<root>/<entry>.npz`` per image with ``image`` uint8 [H,W,3] (RGB) and
``label`` uint8 [H,W] (class indices), plus ``<list_dir>/{train,val,test}.txt`` naming the
entries. One file per image, like the grey sets: the list files alone define the split, any
item loads without reading the rest (cheap random access for the DataLoader workers), a bad
file is reported by name, and uint8 keeps the cache 4x smaller than float32.

Also here: the validated reader (every bad-input case -> :class:`DataError` naming the file),
the data-set base class, the writers of the format (items and lists: the preparations' and the
phantoms') and the resizing that preparations, prediction and support sets share. Image files
are read with :mod:`datasets.io.images`; the preparations' own helpers are in :mod:`datasets.prepare`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from .augment_rgb import IMAGENET_MEAN, IMAGENET_STD, normalize_image
from .base import ListedSegmentationDataset
from .checks import check_labels
from .errors import DataError
from .io.arrays import NPZ_SUFFIX, read_npz, save_npz
from .io.lists import write_list

__all__ = [
    "RGB_SPLITS", "RGB_CHANNELS", "validate_rgb_pair", "load_rgb_pair", "RGBSegmentationDataset", "resize_image",
    "resize_label", "write_rgb_item", "write_split_lists", "entry_name",
]

RGB_SPLITS = ("train", "val", "test")
RGB_CHANNELS = 3


# ----------------------------------------------------------------------------- reading
def validate_rgb_pair(
    path: str, image: np.ndarray, label: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Check a prepared (image, label) pair; return (image uint8 [H,W,3], label int64 [H,W])."""
    if image.ndim != 3:
        raise DataError(path, f"image has {image.ndim} dimensions {image.shape}, expected 3 ([H,W,{RGB_CHANNELS}])")
    if image.shape[-1] != RGB_CHANNELS:
        raise DataError(path, f"image has {image.shape[-1]} channels {image.shape}, expected {RGB_CHANNELS} (RGB)")
    if label.ndim != 2:
        raise DataError(path, f"label has {label.ndim} dimensions {label.shape}, expected 2 ([H,W])")
    if image.shape[:2] != label.shape:
        raise DataError(path, f"image/label shape mismatch: image {image.shape} vs label {label.shape}")
    if image.dtype != np.uint8:
        raise DataError(path, f"image dtype is {image.dtype}, expected uint8 (0..255)")
    if not np.issubdtype(label.dtype, np.integer):
        raise DataError(path, f"label dtype is {label.dtype}, expected an integer type")
    if image.size == 0:
        raise DataError(path, f"empty image {image.shape}")
    check_labels(path, label, num_classes)
    return image, label.astype(np.int64, copy=False)


def load_rgb_pair(
    path: str | os.PathLike, num_classes: int, image_key: str = "image", label_key: str = "label"
) -> tuple[np.ndarray, np.ndarray]:
    """Load and validate one prepared ``.npz`` item: (image uint8 [H,W,3], label int64 [H,W])."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(path, "file does not exist")
    if not path.endswith(NPZ_SUFFIX):
        raise DataError(path, f"unsupported file type (expected {NPZ_SUFFIX})")
    arrays = read_npz(path, (image_key, label_key))
    return validate_rgb_pair(path, arrays[image_key], arrays[label_key], num_classes)


def entry_name(entry: str) -> str:
    """List entry without a trailing ``.npz`` (entries may be written either way)."""
    return entry[: -len(NPZ_SUFFIX)] if entry.endswith(NPZ_SUFFIX) else entry


class RGBSegmentationDataset(ListedSegmentationDataset):
    """Prepared colour images ``<base_dir>/<entry>.npz`` listed in ``<list_dir>/<split>.txt``.

    ``train`` items: dict(image=FloatTensor[3,h,w], label=LongTensor[h,w], case_name) from
    ``transform(image uint8 [H,W,3], label, rng)`` with ``rng = default_rng([seed, epoch, index])``
    (no transform: the stored image, normalised). Other splits: dict(image=np.float32[3,H,W],
    label=np.int64[H,W], case_name), not augmented. Images are ImageNet-normalised in both cases.
    """

    slice_splits = ("train",)
    normalization = (IMAGENET_MEAN, IMAGENET_STD)

    def entry_path(self, entry: str) -> str:
        return os.path.join(self.base_dir, entry_name(entry) + NPZ_SUFFIX)

    def case_name(self, entry: str) -> str:
        return entry_name(entry)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Validated (image uint8 [H,W,3], label int64 [H,W]) of one entry, not normalised."""
        return load_rgb_pair(self.paths[index], self.num_classes, self.image_key, self.label_key)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label = self.load(index)
        name = self.case_name(self.entries[index])
        if self.is_volume:  # evaluation split: one whole image, no augmentation
            return {"image": normalize_image(image), "label": label, "case_name": name}
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image_t, label_t = self.transform(image, label, rng)
        else:
            image_t, label_t = torch.from_numpy(normalize_image(image)), torch.from_numpy(label)
        return {"image": image_t, "label": label_t, "case_name": name}


# ----------------------------------------------------------------------------- the format's writers and resizing
def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (antialiased when shrinking) resize of uint8 [H,W,3] to ``size`` = (height, width)."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a uint8 label map [H,W] to ``size`` = (height, width)."""
    if label.shape == tuple(size):
        return label
    return np.asarray(Image.fromarray(label).resize((size[1], size[0]), Image.Resampling.NEAREST))


def write_rgb_item(root: str | os.PathLike, name: str, image: np.ndarray, label: np.ndarray) -> str:
    """Atomically write ``<root>/<name>.npz`` (image uint8 [H,W,3], label uint8 [H,W]); return the entry."""
    if image.ndim != 3 or image.shape[-1] != RGB_CHANNELS or image.shape[:2] != label.shape:
        raise ValueError(f"expected image [H,W,3] and label [H,W], got {image.shape} and {label.shape}")
    save_npz(os.path.join(os.fspath(root), name + NPZ_SUFFIX),
             image=np.ascontiguousarray(image, dtype=np.uint8), label=np.ascontiguousarray(label, dtype=np.uint8))
    return name


def write_split_lists(list_dir: str | os.PathLike, entries: Mapping[str, Sequence[str]]) -> None:
    """Write ``<list_dir>/<split>.txt`` for every split."""
    for split, names in entries.items():
        write_list(os.path.join(os.fspath(list_dir), f"{split}.txt"), names)



"""HAM10000-like dermoscopy phantom (``python -m datasets.phantoms --dataset ham10000 [--official]``): the ISIC-2018
phantom's images (:func:`datasets.phantoms.isic2018.isic_lesion_image`), two images per lesion.

Prepared format: NV images in train/val/test, ``num_test`` images of each other type in ``test_<dx>``, and
``lesion_ids.csv``. With ``--official``: a fake download (images in ``HAM10000_images_part_{1,2}/``, masks in
``HAM10000_segmentations_lesion_tschandl/``, ``HAM10000_metadata.csv``), the input of ``datasets.prepare.ham10000``.
"""
from __future__ import annotations

import os

import numpy as np

from ..ham10000 import (
    HAM_IMAGE_SUFFIX, HAM_MASK_SUFFIX, HAM_METADATA, HAM_TEST_TYPES, HAM_TRAIN_TYPE, ham_test_split, write_lesion_ids,
)
from ..io.images import save_image_file
from ..io.lists import write_list
from ..rgb import write_rgb_item
from .isic2018 import isic_lesion_image
from .shapes import check_counts, write_rgb_phantom

SALT = 10015  # HAM images differ from ISIC images of the same seed and index
IMAGES_PER_LESION = 2
IMAGE_DIRS = ("HAM10000_images_part_1", "HAM10000_images_part_2")
MASK_DIR = "HAM10000_segmentations_lesion_tschandl"
METADATA_COLUMNS = "lesion_id,image_id,dx,dx_type,age,sex,localization"
JPEG_QUALITY = 95


def ham_image_id(index: int) -> str:
    return f"ISIC_{24306 + index:07d}"


def write_ham10000_phantom(data_root: str | os.PathLike, list_dir: str | os.PathLike, num_train: int = 6,
                           num_val: int = 2, num_test: int = 2, size: int = 64, seed: int = 0) -> dict:
    """Write a synthetic prepared HAM10000 set: NV images (train, val, test; lesions never span two splits), then
    ``num_test`` images of each other type (``test_<dx>``), and ``lesion_ids.csv``. Image i is drawn from
    ``default_rng([seed, SALT, i])``."""
    def make_items(index: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
        return [(ham_image_id(index), *isic_lesion_image(np.random.default_rng([seed, SALT, index]), size, size))]

    written = write_rgb_phantom(data_root, list_dir, (num_train, num_val, num_test), make_items, size=size)
    lesions = {}
    index = 0
    for split in ("train", "val", "test"):  # one lesion per NV image: no lesion spans two splits
        for entry in written["entries"][split]:
            lesions[entry] = (f"HAM_{index:07d}", HAM_TRAIN_TYPE)
            index += 1
    for dx in HAM_TEST_TYPES:
        entries = []
        for _ in range(num_test):
            entry = ham_image_id(index)
            write_rgb_item(data_root, entry, *make_items(index)[0][1:])
            lesions[entry] = (f"HAM_{index:07d}", dx)
            entries.append(entry)
            index += 1
        write_list(os.path.join(os.fspath(list_dir), f"{ham_test_split(dx)}.txt"), entries)
        written["entries"][ham_test_split(dx)] = entries
    write_lesion_ids(list_dir, lesions)
    return written


def write_ham10000_download(src: str | os.PathLike, num_nv: int = 20, num_other: int = 2, height: int = 40,
                            width: int = 48, seed: int = 0) -> list[tuple[str, str, str]]:
    """Write a fake HAM10000 download: ``num_nv`` NV images and ``num_other`` of each other type, two images per
    lesion, alternately in the two image folders; returns the metadata rows (lesion_id, image_id, dx)."""
    check_counts(num_nv=num_nv, num_other=num_other, height=height, width=width)
    src = os.fspath(src)
    rows = []
    types = [HAM_TRAIN_TYPE] * num_nv + [dx for dx in HAM_TEST_TYPES for _ in range(num_other)]
    lesion = 0
    for index, dx in enumerate(types):
        if index and (types[index - 1] != dx or index % IMAGES_PER_LESION == 0):
            lesion += 1
        image_id = ham_image_id(index)
        image, label = isic_lesion_image(np.random.default_rng([seed, SALT, index]), height, width)
        save_image_file(os.path.join(src, IMAGE_DIRS[index % 2], image_id + HAM_IMAGE_SUFFIX), image,
                        quality=JPEG_QUALITY)
        save_image_file(os.path.join(src, MASK_DIR, image_id + HAM_MASK_SUFFIX), (label * 255).astype(np.uint8))
        rows.append((f"HAM_{lesion:07d}", image_id, dx))
    write_list(os.path.join(src, HAM_METADATA), [METADATA_COLUMNS] + [
        f"{lesion_id},{image_id},{dx},histo,50.0,male,back" for lesion_id, image_id, dx in rows])
    return rows

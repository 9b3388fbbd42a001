"""BUS-like breast ultrasound phantom (``python -m datasets.phantoms --dataset bus [--official]``): the BUSI
phantom's images (:func:`datasets.phantoms.ultrasound.ultrasound_lesion_image`), in the prepared format or, with
``--official``, as a fake official download ``BUS/original/*.png`` + ``BUS/GT/*.png`` (the input of
``datasets.prepare.bus``).
"""
from __future__ import annotations

import os

import numpy as np

from ..bus import BUS_IMAGE_DIR, BUS_IMAGE_SUFFIX, BUS_MASK_DIR, BUS_ROOT
from ..io.images import save_image_file
from ..prepare.binary_sets import write_all_list
from .shapes import check_counts, write_rgb_phantom
from .ultrasound import ultrasound_lesion_image

SALT = 7  # BUS images differ from BUSI images of the same seed and index


def bus_phantom_name(index: int) -> str:
    """``000001`` style name, as the official images."""
    return f"{index + 1:06d}"


def write_bus_phantom(data_root: str | os.PathLike, list_dir: str | os.PathLike, num_train: int = 6,
                      num_val: int = 2, num_test: int = 2, size: int = 64, seed: int = 0) -> dict:
    """Write a synthetic prepared BUS set and its lists; image i is drawn from ``default_rng([seed, SALT, i])``;
    the first ``num_train`` train, then val, test; ``all.txt`` lists them all."""
    def make_items(index: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
        image, label = ultrasound_lesion_image(np.random.default_rng([seed, SALT, index]), size, size)
        return [(bus_phantom_name(index), image, label)]

    written = write_rgb_phantom(data_root, list_dir, (num_train, num_val, num_test), make_items, size=size)
    write_all_list(written["list_dir"], written["entries"])  # <list_dir>/all.txt: the cross-domain test list
    return written


def write_bus_download(src: str | os.PathLike, num_images: int = 10, height: int = 40, width: int = 48,
                       seed: int = 0) -> list[str]:
    """Write a fake BUS download: ``src/BUS/original/<name>.png`` (grey) and ``src/BUS/GT/<name>.png`` (0/255)."""
    check_counts(num_images=num_images, height=height, width=width)
    root = os.path.join(os.fspath(src), BUS_ROOT)
    names = []
    for index in range(num_images):
        name = bus_phantom_name(index)
        image, label = ultrasound_lesion_image(np.random.default_rng([seed, SALT, index]), height, width)
        save_image_file(os.path.join(root, BUS_IMAGE_DIR, name + BUS_IMAGE_SUFFIX), image[..., 0])
        save_image_file(os.path.join(root, BUS_MASK_DIR, name + BUS_IMAGE_SUFFIX), (label * 255).astype(np.uint8))
        names.append(name)
    return names

"""BUSI-like breast ultrasound phantom (``python -m datasets.phantoms --dataset busi [--official]``).

Grey speckled tissue with horizontal layering, one dark (hypoechoic) irregular lesion with a bright rim above and
an acoustic shadow below; label 1 = lesion. The grey image is stored as 3 equal RGB channels. Written in the
prepared format, or with ``--official`` as a fake official download (the input of ``datasets.prepare.busi``), with some
images carrying two masks (united by the preparation) and a normal class (dropped by it). The images come from
:func:`datasets.phantoms.ultrasound.ultrasound_lesion_image`.
"""
from __future__ import annotations

import os

import numpy as np

from ..busi import BUSI_CLASSES, BUSI_DROPPED, BUSI_IMAGE_SUFFIX, BUSI_MASK_MARK, BUSI_ROOT
from ..io.images import save_image_file
from ..prepare.binary_sets import write_all_list
from .shapes import check_counts, write_rgb_phantom
from .ultrasound import ultrasound_lesion_image


# ----------------------------------------------------------------------------- writers
def write_busi_phantom(data_root: str | os.PathLike, list_dir: str | os.PathLike, num_train: int = 6,
                       num_val: int = 2, num_test: int = 2, size: int = 64, seed: int = 0) -> dict:
    """Write a synthetic prepared BUSI set (``benign_<i>`` / ``malignant_<i>`` items alternately) and its lists.
    Image i is drawn from ``default_rng([seed, i])``; the first ``num_train`` train, then val, test; ``all.txt``
    lists them all."""
    def make_items(index: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
        name = f"{BUSI_CLASSES[index % 2]}_{index + 1}"
        return [(name, *ultrasound_lesion_image(np.random.default_rng([seed, index]), size, size))]

    written = write_rgb_phantom(data_root, list_dir, (num_train, num_val, num_test), make_items, size=size)
    write_all_list(written["list_dir"], written["entries"])  # <list_dir>/all.txt: the cross-domain test list
    return written


def write_busi_download(src: str | os.PathLike, num_benign: int = 10, num_malignant: int = 10, num_normal: int = 2,
                        height: int = 40, width: int = 48, seed: int = 0) -> dict[str, list[str]]:
    """Write a fake BUSI download under ``src/Dataset_BUSI_with_GT``: ``<class> (<i>).png`` with ``_mask.png``;
    every third lesion image gets its lesion split over two masks (``_mask.png`` and ``_mask_1.png``); normal
    images have empty masks. Returns {class: image stems}."""
    check_counts(num_benign=num_benign, num_malignant=num_malignant, height=height, width=width)
    root = os.path.join(os.fspath(src), BUSI_ROOT)
    written: dict[str, list[str]] = {}
    counts = dict(zip((*BUSI_CLASSES, *BUSI_DROPPED), (num_benign, num_malignant, num_normal)))
    for class_index, (name, count) in enumerate(counts.items()):
        folder = os.path.join(root, name)
        written[name] = []
        for i in range(1, count + 1):
            stem = f"{name} ({i})"
            lesion = name not in BUSI_DROPPED
            image, label = ultrasound_lesion_image(np.random.default_rng([seed, class_index, i]), height, width, lesion)
            save_image_file(os.path.join(folder, stem + BUSI_IMAGE_SUFFIX), image)
            mask = (label * 255).astype(np.uint8)
            if lesion and i % 3 == 0:  # two masks: the left and the right part of the lesion
                left = mask.copy()
                left[:, width // 2:] = 0
                right = mask.copy()
                right[:, :width // 2] = 0
                save_image_file(os.path.join(folder, f"{stem}{BUSI_MASK_MARK}{BUSI_IMAGE_SUFFIX}"), left)
                save_image_file(os.path.join(folder, f"{stem}{BUSI_MASK_MARK}_1{BUSI_IMAGE_SUFFIX}"), right)
            else:
                save_image_file(os.path.join(folder, f"{stem}{BUSI_MASK_MARK}{BUSI_IMAGE_SUFFIX}"), mask)
            written[name].append(stem)
    return written

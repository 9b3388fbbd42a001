"""Build the prepared ISIC-2018 set (one ``.npz`` per image + split lists) from the official download.

Input (https://challenge.isic-archive.com/data/#2018, Task 1 training data, unzipped into ``--src``):

    <src>/ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg ...        2594 dermoscopy images
    <src>/ISIC2018_Task1_Training_GroundTruth/ISIC_0000000_segmentation.png ...   masks 0/255

Steps: read each image as RGB and its mask (lesion = grey value > 127), resize both to
``--size`` x ``--size`` (image bilinear, mask nearest; the reference scripts also resize to a
square, ignoring the aspect ratio), write ``<out>/ISIC_xxxxxxx.npz`` and the lists
``train.txt`` / ``val.txt`` / ``test.txt`` in ``--list_dir``.

Split: 1815 / 259 / 520 consecutive images (for 2594 images; proportionally otherwise), as
BCDU-Net's ``Prepare_ISIC2018.py`` and the scripts copied from it (MCGU-Net, TransDeepLab,
DAE-Former, D-LKA Net, Awesome-U-Net). Those slice an unsorted ``glob`` listing, whose order
depends on the file system; here the listing is sorted by name, which is reproducible.
``--seed N`` instead permutes the sorted names with ``np.random.default_rng(N)``.
Size: 224 by default, the network input of Sim-MPNet (MaxViT) and the size of D-LKA Net and
Awesome-U-Net, so evaluation needs no resampling (BCDU-Net/MCGU-Net used 256).

    python -m datasets.prepare.isic2018 --src ISIC2018 --out data/ISIC2018 --list_dir lists/lists_ISIC2018
"""
from __future__ import annotations

import os
import sys

import numpy as np

from ..errors import DataError
from ..io.images import read_mask_image, read_rgb_image
from ..isic2018 import (
    ISIC2018_IMAGE_DIR, ISIC2018_IMAGE_SUFFIX, ISIC2018_MASK_DIR, ISIC2018_MASK_SUFFIX, ISIC2018_SPLIT_FRACTIONS,
    LESION_LABEL,
)
from ..rgb import resize_image, resize_label, write_rgb_item, write_split_lists
from .cli import image_set_main
from .splits import split_names

DEFAULT_SIZE = 224
MASK_THRESHOLD = 127  # ground truth is 0/255; anything brighter than mid-grey is lesion
PROGRESS_EVERY = 250
LAYOUT_HINT = (f"expected the official ISIC-2018 Task 1 training layout: {ISIC2018_IMAGE_DIR}/*{ISIC2018_IMAGE_SUFFIX} "
               f"and {ISIC2018_MASK_DIR}/*{ISIC2018_MASK_SUFFIX} inside --src")


def find_isic2018_pairs(src: str) -> dict[str, tuple[str, str]]:
    """Map image name (``ISIC_0000000``) -> (image path, mask path); DataError for a missing mask."""
    image_dir, mask_dir = os.path.join(src, ISIC2018_IMAGE_DIR), os.path.join(src, ISIC2018_MASK_DIR)
    for folder in (image_dir, mask_dir):
        if not os.path.isdir(folder):
            raise DataError(folder, f"folder does not exist; {LAYOUT_HINT}")
    pairs = {}
    for file_name in sorted(os.listdir(image_dir)):
        stem, extension = os.path.splitext(file_name)
        if extension.lower() != ISIC2018_IMAGE_SUFFIX:
            continue  # the download also holds LICENSE / ATTRIBUTION text files
        mask_path = os.path.join(mask_dir, stem + ISIC2018_MASK_SUFFIX)
        if not os.path.isfile(mask_path):
            raise DataError(mask_path, f"ground-truth mask missing for image {os.path.join(image_dir, file_name)}")
        pairs[stem] = (os.path.join(image_dir, file_name), mask_path)
    if not pairs:
        raise DataError(image_dir, f"no *{ISIC2018_IMAGE_SUFFIX} images found; {LAYOUT_HINT}")
    return pairs


def load_isic2018_pair(image_path: str, mask_path: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One prepared pair: image uint8 [size,size,3], label uint8 [size,size] (0 background, 1 lesion)."""
    image, mask = read_rgb_image(image_path), read_mask_image(mask_path)
    if mask.shape != image.shape[:2]:
        raise DataError(mask_path, f"mask size {mask.shape} differs from image size {image.shape[:2]} ({image_path})")
    label = np.where(mask > MASK_THRESHOLD, LESION_LABEL, 0).astype(np.uint8)
    return resize_image(image, (size, size)), resize_label(label, (size, size))


def prepare_isic2018(
    src: str, out: str, list_dir: str, size: int = DEFAULT_SIZE, seed: int | None = None
) -> dict[str, list[str]]:
    """Convert the official training images; returns the list entries per split."""
    pairs = find_isic2018_pairs(src)  # every image has its mask before anything is written
    try:
        splits = split_names(list(pairs), ISIC2018_SPLIT_FRACTIONS, seed)
    except ValueError as exc:
        raise DataError(src, f"cannot split {len(pairs)} images: {exc}") from exc
    for done, (name, (image_path, mask_path)) in enumerate(sorted(pairs.items()), start=1):
        write_rgb_item(out, name, *load_isic2018_pair(image_path, mask_path, size))
        if done % PROGRESS_EVERY == 0:
            print(f"{done}/{len(pairs)} images")
    write_split_lists(list_dir, splits)
    return splits


# The command line (``python -m datasets.prepare.isic2018 --src ...``): main(argv) -> exit status.
main = image_set_main(
    __file__, "Convert the official ISIC-2018 Task 1 training data to npz + lists.", prepare_isic2018,
    src_help=f"folder holding {ISIC2018_IMAGE_DIR}/ and {ISIC2018_MASK_DIR}/",
    out="./data/ISIC2018",
    out_help="writes OUT/ISIC_xxxxxxx.npz",
    list_dir="./lists/lists_ISIC2018",
    size=DEFAULT_SIZE,
)


if __name__ == "__main__":
    sys.exit(main())

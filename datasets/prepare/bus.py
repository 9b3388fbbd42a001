"""Prepare BUS (Yap et al. Dataset B) from its download: ``BUS/original/<name>.png`` + ``BUS/GT/<name>.png``.

Each image with its mask (same name, 0/255) -> ``OUT/<name>.npz`` (grey stored as 3 equal RGB channels). Split
70/10/20 (train/val/test) after permuting the sorted names with ``--seed`` (default 0; deterministic). Size 128 by
default (``matchseg_spec.md`` §6).

    python -m datasets.prepare.bus --src BUS_download --out data/BUS --list_dir lists/lists_BUS
"""
from __future__ import annotations

import os
import sys

from .binary_sets import (
    DEFAULT_SIZE, load_binary_pair, require_folder, split_groups, unique_entries, write_prepared,
)
from ..bus import BUS_IMAGE_DIR, BUS_IMAGE_SUFFIX, BUS_MASK_DIR, BUS_ROOT, BUS_SPLIT_FRACTIONS
from ..errors import DataError
from .cli import image_set_main

DEFAULT_SEED = 0
LAYOUT_HINT = (f"expected the BUS layout inside --src: {BUS_ROOT}/{BUS_IMAGE_DIR}/*{BUS_IMAGE_SUFFIX} and "
               f"{BUS_ROOT}/{BUS_MASK_DIR}/*{BUS_IMAGE_SUFFIX} (same names)")


def find_bus(src: str) -> dict[str, tuple[str, str]]:
    """{entry: (image path, mask path)}; ``src`` may be the folder holding ``BUS/`` or ``BUS/`` itself."""
    root = os.path.join(src, BUS_ROOT) if os.path.isdir(os.path.join(src, BUS_ROOT)) else src
    image_dir, mask_dir = os.path.join(root, BUS_IMAGE_DIR), os.path.join(root, BUS_MASK_DIR)
    for folder in (image_dir, mask_dir):
        require_folder(folder, LAYOUT_HINT)
    images = {}
    for file_name in sorted(os.listdir(image_dir)):
        stem, extension = os.path.splitext(file_name)
        if extension.lower() == BUS_IMAGE_SUFFIX:
            images[stem] = os.path.join(image_dir, file_name)
    if not images:
        raise DataError(image_dir, f"no *{BUS_IMAGE_SUFFIX} images found; {LAYOUT_HINT}")
    pairs = {}
    for entry, image_path in unique_entries(images).items():
        stem = os.path.splitext(os.path.basename(image_path))[0]
        mask_path = os.path.join(mask_dir, stem + BUS_IMAGE_SUFFIX)
        if not os.path.isfile(mask_path):
            raise DataError(mask_path, f"ground-truth mask missing for image {image_path}")
        pairs[entry] = (image_path, mask_path)
    return pairs


def prepare_bus(src: str, out: str, list_dir: str, size: int = DEFAULT_SIZE, seed: int | None = DEFAULT_SEED
                ) -> dict[str, list[str]]:
    """Convert every image; returns the list entries per split."""
    pairs = find_bus(src)
    splits = split_groups({"BUS": list(pairs)}, BUS_SPLIT_FRACTIONS, seed, src)
    loaded = {entry: load_binary_pair(image, [mask], size) for entry, (image, mask) in pairs.items()}
    return write_prepared(out, list_dir, loaded, splits)


# The command line (``python -m datasets.prepare.bus --src ...``): main(argv) -> exit status.
main = image_set_main(
    __file__, "Convert the BUS (Dataset B) download to npz + lists.", prepare_bus,
    src_help=f"folder holding {BUS_ROOT}/{BUS_IMAGE_DIR}/ and {BUS_ROOT}/{BUS_MASK_DIR}/",
    out="./data/BUS",
    out_help="writes OUT/<name>.npz",
    list_dir="./lists/lists_BUS",
    size=DEFAULT_SIZE,
    seed=DEFAULT_SEED,
)


if __name__ == "__main__":
    sys.exit(main())

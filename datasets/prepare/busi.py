"""Prepare BUSI from the official download (``Dataset_BUSI_with_GT/{benign,malignant,normal}/``).

Each ``<name>.png`` of benign/ and malignant/ with all its masks (``<name>_mask.png``, ``<name>_mask_1.png``, ...;
united) -> ``OUT/<entry>.npz`` (entry ``benign (12)`` -> ``benign_12``); normal/ is dropped (no lesion). Split
70/10/20 (train/val/test) within each class (stratified), after permuting the sorted names with ``--seed``
(default 0; deterministic). Size 128 by default (``matchseg_spec.md`` §6).

    python -m datasets.prepare.busi --src BUSI_download --out data/BUSI --list_dir lists/lists_BUSI
"""
from __future__ import annotations

import os
import re
import sys

from .binary_sets import (
    DEFAULT_SIZE, load_binary_pair, require_folder, split_groups, unique_entries, write_prepared,
)
from ..busi import BUSI_CLASSES, BUSI_IMAGE_SUFFIX, BUSI_MASK_MARK, BUSI_ROOT, BUSI_SPLIT_FRACTIONS
from ..errors import DataError
from .cli import image_set_main

DEFAULT_SEED = 0
LAYOUT_HINT = (f"expected the official BUSI layout inside --src: {BUSI_ROOT}/{{{','.join(BUSI_CLASSES)},normal}}/"
               f"<name>{BUSI_IMAGE_SUFFIX} with <name>{BUSI_MASK_MARK}{BUSI_IMAGE_SUFFIX} (and _mask_1, ...)")
MASK_PATTERN = re.compile(re.escape(BUSI_MASK_MARK) + r"(_\d+)?$")


def busi_root(src: str) -> str:
    """``src/Dataset_BUSI_with_GT``, or ``src`` itself when it holds the class folders."""
    nested = os.path.join(src, BUSI_ROOT)
    return nested if os.path.isdir(nested) else src


def find_busi_class(folder: str) -> dict[str, tuple[str, list[str]]]:
    """{image stem: (image path, [mask paths])} of one class folder; DataError for an image without mask."""
    images, masks = {}, {}
    for file_name in sorted(os.listdir(folder)):
        stem, extension = os.path.splitext(file_name)
        if extension.lower() != BUSI_IMAGE_SUFFIX:
            continue
        match = MASK_PATTERN.search(stem)
        if match:
            masks.setdefault(stem[:match.start()], []).append(os.path.join(folder, file_name))
        else:
            images[stem] = os.path.join(folder, file_name)
    for stem, paths in masks.items():
        if stem not in images:
            raise DataError(paths[0], f"mask without its image {os.path.join(folder, stem + BUSI_IMAGE_SUFFIX)}")
    found = {}
    for stem, path in images.items():
        if stem not in masks:
            raise DataError(os.path.join(folder, stem + BUSI_MASK_MARK + BUSI_IMAGE_SUFFIX),
                            f"ground-truth mask missing for image {path}")
        found[stem] = (path, sorted(masks[stem]))
    return found


def find_busi(src: str) -> dict[str, dict[str, tuple[str, list[str]]]]:
    """{class: {entry: (image path, mask paths)}} of the kept classes; everything checked before writing."""
    root = busi_root(src)
    pairs = {}
    for name in BUSI_CLASSES:
        folder = os.path.join(root, name)
        require_folder(folder, LAYOUT_HINT)
        found = find_busi_class(folder)
        if not found:
            raise DataError(folder, f"no *{BUSI_IMAGE_SUFFIX} images found; {LAYOUT_HINT}")
        by_entry = unique_entries({stem: path for stem, (path, _) in found.items()})
        pairs[name] = {entry: found[os.path.splitext(os.path.basename(path))[0]] for entry, path in by_entry.items()}
    return pairs


def prepare_busi(src: str, out: str, list_dir: str, size: int = DEFAULT_SIZE, seed: int | None = DEFAULT_SEED
                 ) -> dict[str, list[str]]:
    """Convert the benign and malignant images; returns the list entries per split."""
    pairs = find_busi(src)
    all_entries = [entry for group in pairs.values() for entry in group]
    if len(set(all_entries)) != len(all_entries):
        raise DataError(src, "two classes give the same entry name")
    splits = split_groups({name: list(group) for name, group in pairs.items()}, BUSI_SPLIT_FRACTIONS, seed, src)
    loaded = {entry: load_binary_pair(image, masks, size)
              for group in pairs.values() for entry, (image, masks) in group.items()}
    return write_prepared(out, list_dir, loaded, splits)


# The command line (``python -m datasets.prepare.busi --src ...``): main(argv) -> exit status.
main = image_set_main(
    __file__, "Convert the official BUSI download to npz + lists.", prepare_busi,
    src_help=f"folder holding {BUSI_ROOT}/ (or its class folders)",
    out="./data/BUSI",
    out_help="writes OUT/<class>_<n>.npz",
    list_dir="./lists/lists_BUSI",
    size=DEFAULT_SIZE,
    seed=DEFAULT_SEED,
)


if __name__ == "__main__":
    sys.exit(main())

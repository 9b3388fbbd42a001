"""Prepare GlaS from the official Warwick-QU download (``train_<n>.bmp``, ``testA_<n>.bmp``, ``testB_<n>.bmp``,
each with ``<name>_anno.bmp``, and ``Grade.csv``).

Each image with its annotation (gland instance map, binarised > 0) -> ``OUT/<name>.npz``. Splits: the official
training images (85), 10% of them -> val (after permuting the sorted names with ``--seed``, default 0;
deterministic); test = testA + testB (80), also listed alone in ``testA.txt`` and ``testB.txt``. ``--src`` is the
folder holding the images, or a folder with exactly one such subfolder (the download's
``Warwick QU Dataset (Released 2016_07_08)``). Size 128 by default (``matchseg_spec.md`` §6).

    python -m datasets.prepare.glas --src GlaS_download --out data/GlaS --list_dir lists/lists_GlaS
"""
from __future__ import annotations

import os
import re
import sys

from .binary_sets import DEFAULT_SIZE, load_binary_pair, require_folder, write_prepared
from ..errors import DataError
from ..glas import (
    GLAS_ANNO_MARK, GLAS_IMAGE_SUFFIX, GLAS_TEST_PREFIXES, GLAS_TRAIN_PREFIX, GLAS_VAL_FRACTION,
)
from ..rgb import RGB_SPLITS
from .cli import image_set_main
from .splits import split_in_blocks

DEFAULT_SEED = 0
PREFIXES = (GLAS_TRAIN_PREFIX, *GLAS_TEST_PREFIXES)
NAME_PATTERN = re.compile(r"^(" + "|".join(PREFIXES) + r")_\d+$")
LAYOUT_HINT = (f"expected the official GlaS (Warwick-QU) layout inside --src: train_<n>{GLAS_IMAGE_SUFFIX}, "
               f"testA_<n>{GLAS_IMAGE_SUFFIX}, testB_<n>{GLAS_IMAGE_SUFFIX}, each with <name>{GLAS_ANNO_MARK}"
               f"{GLAS_IMAGE_SUFFIX}")


def has_images(folder: str) -> bool:
    return any(NAME_PATTERN.match(os.path.splitext(f)[0]) for f in os.listdir(folder))


def glas_root(src: str) -> str:
    """``src``, or its only subfolder holding GlaS images."""
    require_folder(src, LAYOUT_HINT)
    if has_images(src):
        return src
    nested = [os.path.join(src, d) for d in sorted(os.listdir(src)) if os.path.isdir(os.path.join(src, d))]
    nested = [d for d in nested if has_images(d)]
    if len(nested) == 1:
        return nested[0]
    raise DataError(src, f"no GlaS images found{' (several candidate subfolders)' if nested else ''}; {LAYOUT_HINT}")


def find_glas(src: str) -> dict[str, dict[str, tuple[str, str]]]:
    """{prefix: {name: (image path, annotation path)}}; DataError for a missing annotation or an empty part."""
    root = glas_root(src)
    found: dict[str, dict[str, tuple[str, str]]] = {prefix: {} for prefix in PREFIXES}
    for file_name in sorted(os.listdir(root)):
        stem, extension = os.path.splitext(file_name)
        if extension.lower() != GLAS_IMAGE_SUFFIX or not NAME_PATTERN.match(stem):
            continue
        anno = os.path.join(root, stem + GLAS_ANNO_MARK + extension)
        if not os.path.isfile(anno):
            raise DataError(anno, f"annotation missing for image {os.path.join(root, file_name)}")
        found[stem.split("_")[0]][stem] = (os.path.join(root, file_name), anno)
    for prefix, pairs in found.items():
        if not pairs:
            raise DataError(root, f"no {prefix}_<n>{GLAS_IMAGE_SUFFIX} images found; {LAYOUT_HINT}")
    return found


def prepare_glas(src: str, out: str, list_dir: str, size: int = DEFAULT_SIZE, seed: int | None = DEFAULT_SEED
                 ) -> dict[str, list[str]]:
    """Convert every image; returns the list entries per list (train, val, test, testA, testB)."""
    found = find_glas(src)
    train_names = list(found[GLAS_TRAIN_PREFIX])
    try:
        splits = split_in_blocks(train_names, (1 - GLAS_VAL_FRACTION, GLAS_VAL_FRACTION), RGB_SPLITS[:2], seed,
                                 what="training images")
    except ValueError as exc:
        raise DataError(src, f"cannot split {len(train_names)} training images: {exc}") from exc
    splits[RGB_SPLITS[2]] = sorted(name for prefix in GLAS_TEST_PREFIXES for name in found[prefix])
    splits.update({prefix: sorted(found[prefix]) for prefix in GLAS_TEST_PREFIXES})
    loaded = {name: load_binary_pair(image, [anno], size, instances=True)
              for pairs in found.values() for name, (image, anno) in pairs.items()}
    return write_prepared(out, list_dir, loaded, splits)


# The command line (``python -m datasets.prepare.glas --src ...``): main(argv) -> exit status.
main = image_set_main(
    __file__, "Convert the official GlaS (Warwick-QU) download to npz + lists.", prepare_glas,
    src_help="folder holding train_*.bmp, testA_*.bmp, testB_*.bmp (+ _anno.bmp)",
    out="./data/GlaS",
    out_help="writes OUT/<name>.npz",
    list_dir="./lists/lists_GlaS",
    size=DEFAULT_SIZE,
    seed=DEFAULT_SEED,
)


if __name__ == "__main__":
    sys.exit(main())

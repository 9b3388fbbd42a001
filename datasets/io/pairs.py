"""A folder of labelled image pairs, the layout of MatchSeg's own repository: ``images/<stem>.<png|jpg|jpeg|bmp>``
with ``masks/<stem>.png`` (same stem, same size), one binary (0/255 or 0/1) or class-index mask per image.

It is how a user hands predict.py a support pool of their own (``--support DIR``): :class:`PairFolder` reads such a
folder with the interface a support pool needs (``entries``, ``paths``, ``load``, ``case_name``, ``list_path``), and
checks every pair when it is opened, so that a bad pool is one error line before anything is written.
``python -m datasets.io.pairs`` writes a listed split of a registered data set in this layout (e.g. the phantom's
training images as a support folder):

    python -m datasets.io.pairs --dataset busi --root data/phantom/BUSI --list_dir data/phantom/lists/lists_BUSI \\
        --split train --out runs/busi_supports
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from ..registry import get_dataset, list_datasets
from .images import read_mask_image, read_rgb_image

IMAGES_DIR, MASKS_DIR = "images", "masks"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
MASK_SUFFIX = ".png"
BINARY_FOREGROUND = 255  # 0/255 masks are binary


def mask_to_label(mask: np.ndarray, num_classes: int, path: str | os.PathLike) -> np.ndarray:
    """int64 class indices of an 8-bit mask: 0/255 -> 0/1 (binary), else the values themselves, which must be class
    indices below ``num_classes``; DataError naming the file and its values otherwise."""
    values = np.unique(mask)
    if set(values.tolist()) <= {0, BINARY_FOREGROUND}:
        return (mask == BINARY_FOREGROUND).astype(np.int64)
    if int(values.max()) < num_classes:
        return mask.astype(np.int64)
    shown = ", ".join(str(int(v)) for v in values[:8]) + (" ..." if len(values) > 8 else "")
    expected = ("a binary mask (0/255 or 0/1)" if num_classes == 2
                else f"class indices 0..{num_classes - 1} (or a binary 0/255 mask)")
    raise DataError(path, f"mask values {{{shown}}}: the model takes {expected}")


class PairFolder:
    """The image/mask pairs of a folder (see the module docstring), checked when opened: a missing ``images/`` or
    ``masks/`` folder, no images, two images of one stem, a missing mask, a mask of another size than its image or
    with values the model cannot take are each a DataError naming the file."""

    transform = None  # a pool is never augmented outside training

    def __init__(self, root: str | os.PathLike, num_classes: int) -> None:
        self.root = Path(root)
        self.list_path = str(self.root)  # what messages and run records name as the pool
        self.num_classes = int(num_classes)
        images_dir, masks_dir = self.root / IMAGES_DIR, self.root / MASKS_DIR
        for folder in (self.root, images_dir, masks_dir):
            if not folder.is_dir():
                raise DataError(folder, f"not a folder (a support folder holds {IMAGES_DIR}/<stem>.png|jpg|bmp and "
                                        f"{MASKS_DIR}/<stem>.png)")
        images: dict[str, Path] = {}
        for path in sorted(images_dir.iterdir()):
            if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if path.stem in images:
                raise DataError(path, f"two images of stem '{path.stem}' ({images[path.stem].name}, {path.name})")
            images[path.stem] = path
        if not images:
            raise DataError(images_dir, "no PNG / JPEG / BMP images (empty folder)")
        self.entries = list(images)
        self.paths = [str(images[stem]) for stem in self.entries]
        self.mask_paths = [str(masks_dir / f"{stem}{MASK_SUFFIX}") for stem in self.entries]
        for image_path, mask_path in zip(self.paths, self.mask_paths):
            if not os.path.isfile(mask_path):
                raise DataError(image_path, f"no mask for this image (expected {mask_path})")
            mask = read_mask_image(mask_path)
            with Image.open(image_path) as image:
                width, height = image.size
            if mask.shape != (height, width):
                raise DataError(mask_path, f"mask is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is "
                                           f"{width}x{height}")
            mask_to_label(mask, self.num_classes, mask_path)

    def __len__(self) -> int:
        return len(self.entries)

    def case_name(self, entry: str) -> str:
        return entry

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image uint8 [H, W, 3] RGB, label int64 [H, W]) of pair ``index``."""
        mask_path = self.mask_paths[index]
        return (np.array(read_rgb_image(self.paths[index])),  # writable, as the prepared readers' arrays
                mask_to_label(read_mask_image(mask_path), self.num_classes, mask_path))


def write_pair_folder(dataset, out: str | os.PathLike) -> int:
    """Write the items of a listed split (``load(i)`` -> uint8 RGB image, class indices) as a pair folder at ``out``:
    ``images/<case>.png`` and ``masks/<case>.png`` (binary labels as 0/255). Everything is written into a temporary
    folder beside ``out`` and renamed onto it at the end, so ``out`` never holds half a pool; ``out`` must not exist.
    Returns the number of pairs."""
    out = Path(out)
    if out.exists():
        raise DataError(out, "already exists; choose a new --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for folder in (IMAGES_DIR, MASKS_DIR):
            (staging / folder).mkdir()
        binary = dataset.num_classes == 2
        for index, entry in enumerate(dataset.entries):
            image, label = dataset.load(index)
            name = dataset.case_name(entry)
            mask = (label * BINARY_FOREGROUND if binary else label).astype(np.uint8)
            Image.fromarray(np.asarray(image, dtype=np.uint8)).save(staging / IMAGES_DIR / f"{name}.png")
            Image.fromarray(mask).save(staging / MASKS_DIR / f"{name}{MASK_SUFFIX}")
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return len(dataset.entries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name if __spec__ else __name__}",
                                     description="Write a listed split of a registered 2-D data set as a folder of "
                                                 "image/mask pairs (images/<name>.png, masks/<name>.png), e.g. a "
                                                 "support folder for predict.py --support.")
    parser.add_argument("--dataset", required=True, choices=list_datasets())
    parser.add_argument("--root", required=True, help="folder of the prepared items (e.g. data/BUSI)")
    parser.add_argument("--list_dir", required=True, help="folder of the split lists")
    parser.add_argument("--split", default="train", help="list name (default: train)")
    parser.add_argument("--out", required=True, help="the new folder")
    args = parser.parse_args(argv)
    spec = get_dataset(args.dataset)
    try:
        if spec.kind != "image":
            raise DataError(args.root, f"{spec.name} holds volumes; a pair folder holds 2-D images")
        count = write_pair_folder(spec.build(args.root, args.list_dir, args.split, spec.num_classes), args.out)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {count} image/mask pairs of {spec.name} {args.split} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

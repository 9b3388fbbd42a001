"""Build the prepared SegPC-2021 set (one ``.npz`` per item + split lists) from the official download.

Input (https://ieee-dataport.org/open-access/segpc-2021-segmentation-multiple-myeloma-plasma-cells-microscopic-images
or https://www.kaggle.com/datasets/sbilab/segpc2021dataset, unzipped into ``--src``): every folder
below ``--src`` that holds ``x/`` and ``y/`` (``TCIA_SegPC_dataset/train`` with 298 images and
``.../validation`` with 200; the label-less ``test`` has no ``y/`` and is skipped; nested
copies like ``train/train/x`` are found too):

    x/<image>.bmp            RGB field, 2040x1536 or 2560x1920
    y/<image>_<n>.bmp        one mask per plasma cell n: 0 background, 20 cytoplasm, 40 nucleus

Labels: each instance mask becomes 0/1/2 (background/cytoplasm/nucleus); the instances of an
image are merged by the maximum, so a nucleus wins where a neighbour's cytoplasm overlaps it.

``--mode crop`` (default) follows the protocol of the Awesome-U-Net benchmark (source of the
UCTransNet / TransUNet / MISSFormer SegPC numbers) and TMUNet: one item per cell, cropped
around its nucleus box grown by ``--scale`` (2.5) x half the box size on every side (zero
padding outside the field), padded to a square and resized to ``--size`` (224). Differences,
because Sim-MPNet takes 3 input channels and predicts 3 classes: the nucleus mask is not
added as a 4th input channel, and the label is the merged 3-class map of every cell in the
crop (not only the centred one, which RGB alone could not single out).
``--mode image``: one item per field, the whole image resized to ``--size``.

Split: the train and validation images pooled and split 50/20/30 (train/val/test) as in
Awesome-U-Net, but by image (all crops of an image stay in one split) in sorted-name order;
``--seed N`` permutes the images with ``np.random.default_rng(N)`` first.

    python -m datasets.prepare.segpc2021 --src SegPC2021 --out data/SegPC2021 --list_dir lists/lists_SegPC2021
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from ..errors import DataError
from ..io.images import read_mask_image, read_rgb_image
from ..rgb import resize_image, resize_label, write_rgb_item, write_split_lists
from ..segpc2021 import (
    MASK_VALUE_TO_LABEL, NUCLEUS_LABEL, SEGPC2021_CROP_SCALE, SEGPC2021_IMAGE_DIR, SEGPC2021_MASK_DIR,
    SEGPC2021_SPLIT_FRACTIONS, SEGPC2021_SUFFIX, segpc_item_name,
)
from .cli import add_preparation_arguments, preparation_parser, run_preparation
from .splits import split_names

DEFAULT_SIZE = 224
MODES = ("crop", "image")
LAYOUT_HINT = (f"expected folders with {SEGPC2021_IMAGE_DIR}/<image>{SEGPC2021_SUFFIX} and "
               f"{SEGPC2021_MASK_DIR}/<image>_<n>{SEGPC2021_SUFFIX} (the official TCIA_SegPC_dataset/train and "
               f"validation) inside --src")


@dataclass(frozen=True)
class SegPCImage:
    """One official image and its instance masks ``{instance id: mask path}``."""

    name: str
    image_path: str
    mask_paths: dict[str, str]


# ----------------------------------------------------------------------------- finding files
def find_segpc_subsets(src: str) -> list[str]:
    """Folders below ``src`` (itself included) holding both ``x/`` and ``y/``, sorted."""
    if not os.path.isdir(src):
        raise DataError(src, "folder does not exist")
    subsets = [root for root, dirs, _ in os.walk(src)
               if SEGPC2021_IMAGE_DIR in dirs and SEGPC2021_MASK_DIR in dirs]
    if not subsets:
        raise DataError(src, f"no labelled SegPC folder found; {LAYOUT_HINT}")
    return sorted(subsets)


def _bmp_stems(folder: str) -> list[str]:
    return sorted(os.path.splitext(name)[0] for name in os.listdir(folder)
                  if os.path.splitext(name)[1].lower() == SEGPC2021_SUFFIX)


def _instance_order(instance: str) -> tuple[int, int | str]:
    return (0, int(instance)) if instance.isdigit() else (1, instance)


def find_segpc_subset_images(subset: str) -> dict[str, SegPCImage]:
    """Images of one ``x/`` + ``y/`` folder with their instance masks; DataError for unpaired files."""
    x_dir, y_dir = os.path.join(subset, SEGPC2021_IMAGE_DIR), os.path.join(subset, SEGPC2021_MASK_DIR)
    images = {stem: os.path.join(x_dir, stem + SEGPC2021_SUFFIX) for stem in _bmp_stems(x_dir)}
    masks: dict[str, dict[str, str]] = {stem: {} for stem in images}
    for mask_stem in _bmp_stems(y_dir):
        mask_path = os.path.join(y_dir, mask_stem + SEGPC2021_SUFFIX)
        stem, separator, instance = mask_stem.rpartition("_")
        if not separator or not instance:
            raise DataError(mask_path, f"mask name is not <image>_<n>{SEGPC2021_SUFFIX}")
        if stem not in images:
            image_path = os.path.join(x_dir, stem + SEGPC2021_SUFFIX)
            raise DataError(mask_path, f"instance mask without its image {image_path}")
        masks[stem][instance] = mask_path
    for stem, image_path in images.items():
        if not masks[stem]:
            pattern = f"{os.path.join(y_dir, stem)}_<n>{SEGPC2021_SUFFIX}"
            raise DataError(image_path, f"image without instance masks ({pattern})")
    return {stem: SegPCImage(stem, images[stem], {n: masks[stem][n] for n in sorted(masks[stem], key=_instance_order)})
            for stem in images}


def find_segpc_images(src: str) -> dict[str, SegPCImage]:
    """All labelled images below ``src`` by name; DataError if a name occurs in two folders or none exist."""
    found: dict[str, SegPCImage] = {}
    for subset in find_segpc_subsets(src):
        for name, record in find_segpc_subset_images(subset).items():
            if name in found:
                raise DataError(record.image_path, f"image name '{name}' also used by {found[name].image_path}")
            found[name] = record
    if not found:
        raise DataError(src, f"no {SEGPC2021_SUFFIX} images found; {LAYOUT_HINT}")
    return found


# ----------------------------------------------------------------------------- labels
def instance_class_map(mask: np.ndarray, path: str) -> np.ndarray:
    """Official instance mask (0/20/40) -> uint8 class map (0 background, 1 cytoplasm, 2 nucleus)."""
    values = np.unique(mask)
    unexpected = [int(v) for v in values if int(v) not in MASK_VALUE_TO_LABEL]
    if unexpected:
        raise DataError(path, f"unexpected mask values {unexpected[:5]}; expected "
                              f"{sorted(MASK_VALUE_TO_LABEL)} (background, cytoplasm, nucleus)")
    if values.max(initial=0) == 0:
        raise DataError(path, "instance mask is empty (no cytoplasm or nucleus pixel)")
    lookup = np.zeros(max(MASK_VALUE_TO_LABEL) + 1, dtype=np.uint8)
    for value, label in MASK_VALUE_TO_LABEL.items():
        lookup[value] = label
    return lookup[mask]


def merge_instances(class_maps: Sequence[np.ndarray]) -> np.ndarray:
    """Semantic label of overlapping instances: the largest class wins (nucleus over cytoplasm)."""
    return np.maximum.reduce(list(class_maps)).astype(np.uint8)


def load_segpc_image(record: SegPCImage) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The RGB field uint8 [H,W,3] and each instance's class map [H,W]; DataError for a bad file."""
    image = read_rgb_image(record.image_path)
    instances = {}
    for instance, mask_path in record.mask_paths.items():
        mask = read_mask_image(mask_path)
        if mask.shape != image.shape[:2]:
            raise DataError(mask_path, f"mask size {mask.shape} differs from image size {image.shape[:2]} "
                                       f"({record.image_path})")
        instances[instance] = instance_class_map(mask, mask_path)
    return image, instances


# ----------------------------------------------------------------------------- cropping
def nucleus_box(class_map: np.ndarray, scale: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), bottom/right exclusive: the nucleus bounding box (the whole cell
    if it has no nucleus pixel) grown by round(scale * size / 2) on each side; may leave the image."""
    target = class_map == NUCLEUS_LABEL
    if not target.any():
        target = class_map > 0
    rows, cols = np.flatnonzero(target.any(axis=1)), np.flatnonzero(target.any(axis=0))
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    grow_rows, grow_cols = round(scale * (bottom - top) / 2), round(scale * (right - left) / 2)
    return top - grow_rows, bottom + grow_rows, left - grow_cols, right + grow_cols


def crop_with_padding(array: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``array[top:bottom, left:right]`` with zeros where the box leaves the array."""
    top, bottom, left, right = box
    out = np.zeros((bottom - top, right - left) + array.shape[2:], dtype=array.dtype)
    src_top, src_bottom = max(top, 0), min(bottom, array.shape[0])
    src_left, src_right = max(left, 0), min(right, array.shape[1])
    if src_top < src_bottom and src_left < src_right:
        source = array[src_top:src_bottom, src_left:src_right]
        out[src_top - top:src_bottom - top, src_left - left:src_right - left] = source
    return out


def pad_to_square(array: np.ndarray) -> np.ndarray:
    """Centre ``array`` [H,W,...] in a zero square of side max(H, W) (keeps the aspect ratio)."""
    height, width = array.shape[:2]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    return crop_with_padding(array, (-top, side - top, -left, side - left))


def cell_crop(
    image: np.ndarray, label: np.ndarray, class_map: np.ndarray, scale: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The square crop around one cell's nucleus, resized to size x size (image bilinear, label nearest)."""
    box = nucleus_box(class_map, scale)
    image_crop = pad_to_square(crop_with_padding(image, box))
    label_crop = pad_to_square(crop_with_padding(label, box))
    return resize_image(image_crop, (size, size)), resize_label(label_crop, (size, size))


def segpc_items(
    name: str, image: np.ndarray, instances: dict[str, np.ndarray], mode: str, size: int,
    scale: float = SEGPC2021_CROP_SCALE,
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(entry name, image uint8 [S,S,3], label uint8 [S,S]) items of one field in ``mode``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    label = merge_instances(list(instances.values()))
    if mode == "image":
        return [(segpc_item_name(name), resize_image(image, (size, size)), resize_label(label, (size, size)))]
    return [(segpc_item_name(name, instance), *cell_crop(image, label, class_map, scale, size))
            for instance, class_map in instances.items()]


def prepare_segpc2021(
    src: str, out: str, list_dir: str, size: int = DEFAULT_SIZE, seed: int | None = None, mode: str = "crop",
    scale: float = SEGPC2021_CROP_SCALE
) -> dict[str, list[str]]:
    """Convert the labelled official images; returns the list entries per split."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    records = find_segpc_images(src)  # every image is paired with its masks before anything is written
    try:
        image_splits = split_names(list(records), SEGPC2021_SPLIT_FRACTIONS, seed)
    except ValueError as exc:
        raise DataError(src, f"cannot split {len(records)} images: {exc}") from exc
    entries: dict[str, list[str]] = {split: [] for split in image_splits}
    for split, names in image_splits.items():
        for name in names:
            image, instances = load_segpc_image(records[name])
            for entry, item_image, item_label in segpc_items(name, image, instances, mode, size, scale):
                entries[split].append(write_rgb_item(out, entry, item_image, item_label))
            print(f"{name}: {len(instances)} cells -> {split}")
    write_split_lists(list_dir, entries)
    return entries


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = preparation_parser(__file__, "Convert the official SegPC-2021 train/validation data to npz + lists.")
    add_preparation_arguments(parser, "folder holding TCIA_SegPC_dataset (or its train/validation)",
                              "./data/SegPC2021", "writes OUT/<image>_<n>.npz (crop) or OUT/<image>.npz (image)",
                              "./lists/lists_SegPC2021", DEFAULT_SIZE)
    parser.add_argument("--mode", choices=MODES, default="crop", help="one item per cell (crop) or per field (image)")
    parser.add_argument("--scale", type=float, default=SEGPC2021_CROP_SCALE,
                        help="crop margin around the nucleus, in half nucleus sizes per side")
    args = parser.parse_args(argv)
    if args.scale < 0:
        parser.error(f"--scale must be >= 0, got {args.scale}")
    prepare = partial(prepare_segpc2021, args.src, args.out, args.list_dir, args.size, args.seed, args.mode, args.scale)
    return run_preparation(prepare, args.out, args.list_dir, "segpc2021")


if __name__ == "__main__":
    sys.exit(main())

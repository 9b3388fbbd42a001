"""Shared preparation helpers of the binary-mask colour sets of MatchSeg (BUSI, BUS, GlaS, HAM10000).

Every one of them is prepared like ISIC-2018 (:mod:`datasets.rgb`): one ``<root>/<entry>.npz`` per image with
``image`` uint8 [S,S,3] RGB and ``label`` uint8 [S,S] (0 background, 1 foreground), lists ``<list_dir>/<split>.txt``.
Grey ultrasound images (BUSI, BUS) are stored as 3 equal RGB channels, so that one 3-channel model fits all four
sets. Default size 128 x 128 (the MatchSeg/UniverSeg convention, ``matchseg_spec.md`` §6).

Every preparation (and the BUSI and BUS phantoms) also writes ``<list_dir>/all.txt``: the sorted union of every list
it writes, i.e. every prepared image. Cross-domain protocols (``datasets.protocols``: BUSI->BUS, BUS->BUSI) test
on all images of the target set. For HAM10000 that is all 10,015 images (the NV train/val/test and the six
``test_<dx>`` lists), not only NV.

Here: reading an image with one or several masks (united), the binary-mask check, entry names, stratified splits,
the ``all`` list.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import DataError
from ..io.images import read_mask_image, read_rgb_image
from ..io.lists import write_list
from ..rgb import RGB_SPLITS, resize_image, resize_label, write_rgb_item, write_split_lists
from .splits import split_names

DEFAULT_SIZE = 128
ALL_LIST = "all"  # <list_dir>/all.txt: every prepared image (the union of the other lists)
MASK_VALUES = (0, 255)  # official binary masks
FOREGROUND = 1


def entry_for(stem: str) -> str:
    """A list entry safe for list files and file names: ``benign (12)`` -> ``benign_12``."""
    entry = re.sub(r"[^A-Za-z0-9]+", "_", stem).strip("_")
    if not entry:
        raise ValueError(f"no usable characters in name {stem!r}")
    return entry


def unique_entries(stems_to_paths: Mapping[str, str]) -> dict[str, str]:
    """Map entry -> path for {file stem: path}; DataError naming both files when two stems give one entry."""
    entries: dict[str, str] = {}
    for stem, path in sorted(stems_to_paths.items()):
        entry = entry_for(stem)
        if entry in entries:
            raise DataError(path, f"its entry name {entry!r} is also that of {entries[entry]}; rename one of them")
        entries[entry] = path
    return entries


def check_binary_mask(path: str, mask: np.ndarray) -> None:
    """DataError naming ``path`` and the offending values when ``mask`` holds values other than 0 and 255."""
    values = np.unique(mask)
    bad = [int(v) for v in values if int(v) not in MASK_VALUES]
    if bad:
        shown = ", ".join(str(v) for v in bad[:10]) + (", ..." if len(bad) > 10 else "")
        raise DataError(path, f"mask is not binary: values {shown} besides {MASK_VALUES[0]}/{MASK_VALUES[1]}")


def load_binary_pair(image_path: str, mask_paths: Sequence[str], size: int, instances: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
    """One prepared pair from an image and its masks: image uint8 [size,size,3], label uint8 0/1 [size,size].

    Several masks are united (pixelwise maximum). Each mask must be 0/255 (DataError naming that mask and its other
    values), unless ``instances``: an instance map (0 background, 1..n objects) binarised by ``> 0``.
    Every mask must have the image's size (DataError naming the mask).
    """
    if not mask_paths:
        raise DataError(image_path, "no mask for this image")
    image = read_rgb_image(image_path)
    union = None
    for mask_path in mask_paths:
        mask = read_mask_image(mask_path)
        if mask.shape != image.shape[:2]:
            raise DataError(mask_path, f"mask size {mask.shape} differs from image size {image.shape[:2]} "
                                       f"({image_path})")
        if not instances:  # each mask on its own, so that the error names the offending file
            check_binary_mask(mask_path, mask)
        union = mask if union is None else np.maximum(union, mask)
    label = (union > 0).astype(np.uint8) * FOREGROUND
    return resize_image(image, (size, size)), resize_label(label, (size, size))


def split_groups(groups: Mapping[str, Sequence[str]], fractions: Sequence[float], seed: int | None,
                 where: str) -> dict[str, list[str]]:
    """Split each group (e.g. a class) on its own with :func:`datasets.prepare.splits.split_names` and join the splits
    (stratified); DataError naming ``where`` when a group is too small."""
    splits: dict[str, list[str]] = {split: [] for split in RGB_SPLITS}
    for group, names in sorted(groups.items()):
        try:
            part = split_names(list(names), fractions, seed)
        except ValueError as exc:
            raise DataError(where, f"cannot split the {len(names)} {group} images: {exc}") from exc
        for split in RGB_SPLITS:
            splits[split].extend(part[split])
    return {split: sorted(names) for split, names in splits.items()}


def require_folder(path: str, hint: str) -> None:
    if not os.path.isdir(path):
        raise DataError(path, f"folder does not exist; {hint}")


def write_prepared(out: str, list_dir: str, loaded: Mapping[str, tuple[np.ndarray, np.ndarray]],
                   splits: dict[str, list[str]]) -> dict[str, list[str]]:
    """Write the loaded (image, label) items and the split lists; returns ``splits``. Callers load every pair
    first, so that a bad file stops the preparation before anything is written."""
    for entry, (image, label) in loaded.items():
        write_rgb_item(out, entry, image, label)
    write_split_lists(list_dir, splits)
    write_all_list(list_dir, splits)
    return splits


def write_all_list(list_dir: str | os.PathLike, entries: Mapping[str, Sequence[str]]) -> list[str]:
    """Write ``<list_dir>/all.txt``, the sorted union of the entries of every list in ``entries`` ({list name:
    entries}, e.g. train/val/test); returns it."""
    union = sorted({entry for names in entries.values() for entry in names})
    write_list(os.path.join(os.fspath(list_dir), f"{ALL_LIST}.txt"), union)
    return union

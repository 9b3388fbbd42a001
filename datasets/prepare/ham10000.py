"""Prepare HAM10000 for MatchSeg's protocol from the official download (anywhere below ``--src``): images
``<image_id>.jpg``, masks ``<image_id>_segmentation.png`` (0/255) and ``HAM10000_metadata.csv`` (lesion_id,
image_id, dx, ...).

Every image of the metadata -> ``OUT/<image_id>.npz``. Lists: NV -> train/val/test 80/10/10 of its lesions (grouped
by lesion_id: all images of one lesion in one split; lesions permuted with ``--seed``, default 0; deterministic);
each other type -> ``test_<dx>.txt`` with all its images; ``lesion_ids.csv`` (entry, lesion_id, dx) for every
image. Size 128 by default (``matchseg_spec.md`` §6).

    python -m datasets.prepare.ham10000 --src HAM10000_download --out data/HAM10000 --list_dir lists/lists_HAM10000
"""
from __future__ import annotations

import csv
import os
import sys
from collections.abc import Sequence

from .binary_sets import DEFAULT_SIZE, load_binary_pair, require_folder, write_prepared
from ..errors import DataError
from ..ham10000 import (
    HAM_IMAGE_SUFFIX, HAM_MASK_SUFFIX, HAM_METADATA, HAM_SPLIT_FRACTIONS, HAM_TEST_TYPES, HAM_TRAIN_TYPE, HAM_TYPES,
    ham_test_split, write_lesion_ids,
)
from ..rgb import RGB_SPLITS
from .cli import image_set_main
from .splits import split_in_blocks

DEFAULT_SEED = 0
METADATA_COLUMNS = ("lesion_id", "image_id", "dx")
LAYOUT_HINT = (f"expected below --src: {HAM_METADATA}, images <image_id>{HAM_IMAGE_SUFFIX} and masks "
               f"<image_id>{HAM_MASK_SUFFIX}")


def index_files(src: str) -> dict[str, str]:
    """{file name: path} of every file below ``src``; DataError when a name occurs twice."""
    require_folder(src, LAYOUT_HINT)
    files: dict[str, str] = {}
    for folder, dirs, names in os.walk(src):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            if name in files:
                raise DataError(path, f"same file name as {files[name]}; keep one copy")
            files[name] = path
    return files


def read_metadata(path: str) -> list[tuple[str, str, str]]:
    """(lesion_id, image_id, dx) rows of the metadata csv; DataError for missing columns, unknown types, repeats."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in METADATA_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise DataError(path, f"missing column(s) {', '.join(missing)} (has {reader.fieldnames})")
        rows, seen = [], set()
        for line, row in enumerate(reader, start=2):
            lesion_id, image_id, dx = (row[c].strip() for c in METADATA_COLUMNS)
            if dx.lower() not in HAM_TYPES:
                raise DataError(path, f"line {line}: unknown lesion type dx={dx!r} (known: {', '.join(HAM_TYPES)})")
            if not lesion_id or not image_id:
                raise DataError(path, f"line {line}: empty lesion_id or image_id")
            if image_id in seen:
                raise DataError(path, f"line {line}: image_id {image_id} listed twice")
            seen.add(image_id)
            rows.append((lesion_id, image_id, dx.lower()))
    if not rows:
        raise DataError(path, "no images listed")
    return rows


def find_ham10000(src: str) -> tuple[list[tuple[str, str, str]], dict[str, tuple[str, str]]]:
    """Metadata rows and {image_id: (image path, mask path)}; DataError for any missing file."""
    files = index_files(src)
    if HAM_METADATA not in files:
        raise DataError(os.path.join(src, HAM_METADATA), f"metadata file not found below --src; {LAYOUT_HINT}")
    rows = read_metadata(files[HAM_METADATA])
    pairs = {}
    for _, image_id, _ in rows:
        image_name, mask_name = image_id + HAM_IMAGE_SUFFIX, image_id + HAM_MASK_SUFFIX
        if image_name not in files:
            raise DataError(os.path.join(src, image_name), f"image of {image_id} ({HAM_METADATA}) not found below "
                                                           "--src")
        if mask_name not in files:
            raise DataError(os.path.join(os.path.dirname(files[image_name]), mask_name),
                            f"ground-truth mask missing for image {files[image_name]} (not found below --src)")
        pairs[image_id] = (files[image_name], files[mask_name])
    return rows, pairs


def ham10000_splits(rows: Sequence[tuple[str, str, str]], seed: int | None, where: str) -> dict[str, list[str]]:
    """NV: train/val/test by lesion (80/10/10 of the lesions); other types: ``test_<dx>`` (all their images)."""
    nv_lesions: dict[str, list[str]] = {}
    splits: dict[str, list[str]] = {ham_test_split(dx): [] for dx in HAM_TEST_TYPES}
    for lesion_id, image_id, dx in rows:
        if dx == HAM_TRAIN_TYPE:
            nv_lesions.setdefault(lesion_id, []).append(image_id)
        else:
            splits[ham_test_split(dx)].append(image_id)
    try:
        lesion_splits = split_in_blocks(list(nv_lesions), HAM_SPLIT_FRACTIONS, RGB_SPLITS, seed, what="NV lesions")
    except ValueError as exc:
        raise DataError(where, f"cannot split the {len(nv_lesions)} NV lesions: {exc}") from exc
    result = {split: sorted(i for lesion in lesion_splits[split] for i in nv_lesions[lesion]) for split in RGB_SPLITS}
    result.update({name: sorted(entries) for name, entries in splits.items()})
    return result


def prepare_ham10000(src: str, out: str, list_dir: str, size: int = DEFAULT_SIZE, seed: int | None = DEFAULT_SEED
                     ) -> dict[str, list[str]]:
    """Convert every image of the metadata; returns the list entries per list."""
    rows, pairs = find_ham10000(src)
    splits = ham10000_splits(rows, seed, src)
    loaded = {image_id: load_binary_pair(image, [mask], size) for image_id, (image, mask) in pairs.items()}
    write_prepared(out, list_dir, loaded, splits)
    write_lesion_ids(list_dir, {image_id: (lesion_id, dx) for lesion_id, image_id, dx in rows})
    return splits


# The command line (``python -m datasets.prepare.ham10000 --src ...``): main(argv) -> exit status.
main = image_set_main(
    __file__, "Convert the HAM10000 download to npz + lists (train on NV).", prepare_ham10000,
    src_help=f"folder holding {HAM_METADATA}, the images and the masks (any subfolders)",
    out="./data/HAM10000",
    out_help="writes OUT/<image_id>.npz",
    list_dir="./lists/lists_HAM10000",
    size=DEFAULT_SIZE,
    seed=DEFAULT_SEED,
)


if __name__ == "__main__":
    sys.exit(main())

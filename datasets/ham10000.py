"""HAM10000 (Tschandl et al. 2018): 10,015 dermoscopy images (RGB) of 7 lesion types with lesion masks, prepared
for MatchSeg's protocol: train on the NV type (melanocytic nevi), test on each of the six other types.

Official download: images ``<image_id>.jpg`` (``HAM10000_images_part_1/``, ``HAM10000_images_part_2/``), lesion
masks ``<image_id>_segmentation.png`` (0/255; ISIC 2018 Task 1/3 style, e.g. ``HAM10000_segmentations_lesion_
tschandl/``) and ``HAM10000_metadata.csv`` (columns lesion_id, image_id, dx, ...), anywhere below one folder.
Prepared by ``python -m datasets.prepare.ham10000`` (see :mod:`datasets.prepare.binary_sets`):

    data/HAM10000/ISIC_0027419.npz           image uint8 [S,S,3], label uint8 [S,S] (0 background, 1 lesion)
    lists/lists_HAM10000/{train,val,test}.txt       NV images, 80/10/10 by lesion_id (no lesion in two splits)
    lists/lists_HAM10000/test_<dx>.txt               every image of each other type: mel, bkl, bcc, akiec, vasc, df
    lists/lists_HAM10000/lesion_ids.csv              entry,lesion_id,dx of every image (support selection
                                                     excludes images of the query's lesion)

The registry entry (``get_dataset("ham10000")``) is declared at the end of this file.
"""
from __future__ import annotations

import csv
import os

from .augment_rgb import RGBAugment, normalize_image
from .errors import DataError
from .registry import DatasetSpec, PhantomSpec, RawInput, register_dataset
from .rgb import RGB_SPLITS, RGBSegmentationDataset, resize_image, resize_label

HAM_CLASS_NAMES = ("lesion",)
HAM_DIR_NAME = "HAM10000"
HAM_LIST_DIR_NAME = "lists_HAM10000"
HAM_METADATA = "HAM10000_metadata.csv"
HAM_IMAGE_SUFFIX = ".jpg"
HAM_MASK_SUFFIX = "_segmentation.png"
HAM_TRAIN_TYPE = "nv"
HAM_TEST_TYPES = ("mel", "bkl", "bcc", "akiec", "vasc", "df")
HAM_TYPES = (HAM_TRAIN_TYPE, *HAM_TEST_TYPES)
HAM_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # of the NV lesions
HAM_LESION_FILE = "lesion_ids.csv"
HAM_LESION_COLUMNS = ("entry", "lesion_id", "dx")


def ham_test_split(dx: str) -> str:
    """The list name of a lesion type's test images: ``test_mel``, ..."""
    return f"test_{dx}"


def read_lesion_ids(list_dir: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """{entry: (lesion_id, dx)} from ``<list_dir>/lesion_ids.csv``; DataError if missing or malformed."""
    path = os.path.join(os.fspath(list_dir), HAM_LESION_FILE)
    if not os.path.isfile(path):
        raise DataError(path, "file does not exist")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != HAM_LESION_COLUMNS:
            raise DataError(path, f"expected the columns {','.join(HAM_LESION_COLUMNS)}, got {reader.fieldnames}")
        return {row["entry"]: (row["lesion_id"], row["dx"]) for row in reader}


def write_lesion_ids(list_dir: str | os.PathLike, rows: dict[str, tuple[str, str]]) -> None:
    """Write ``<list_dir>/lesion_ids.csv`` from {entry: (lesion_id, dx)} (sorted by entry)."""
    path = os.path.join(os.fspath(list_dir), HAM_LESION_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HAM_LESION_COLUMNS)
        writer.writerows((entry, *rows[entry]) for entry in sorted(rows))


def lesion_groups(list_dir: str | os.PathLike) -> dict[str, str]:
    """{entry: lesion_id}: the support-set groups (images of one lesion never support each other)."""
    return {entry: lesion for entry, (lesion, _) in read_lesion_ids(list_dir).items()}


class HAM10000Dataset(RGBSegmentationDataset):
    """Prepared HAM10000 images; ``base_dir`` is the prepared folder (e.g. ``./data/HAM10000``). Splits:
    train/val/test (NV) and ``test_<dx>`` for the six other types."""


# ----------------------------------------------------------------------------- registry entry
HAM10000 = register_dataset(DatasetSpec(
    name="ham10000", title="HAM10000 skin lesions (dermoscopy; train NV, test other types)",
    class_names=HAM_CLASS_NAMES, in_chans=3, kind="image", reader=HAM10000Dataset,
    root_path=f"./data/{HAM_DIR_NAME}", volume_path=f"./data/{HAM_DIR_NAME}", list_dir=f"./lists/{HAM_LIST_DIR_NAME}",
    train_split=RGB_SPLITS[0], val_split=RGB_SPLITS[1], test_split=RGB_SPLITS[2], train_transform=RGBAugment,
    phantom=PhantomSpec(dir_name=HAM_DIR_NAME, list_dir_name=HAM_LIST_DIR_NAME,
                        write="datasets.phantoms.ham10000:write_ham10000_phantom",
                        write_download="datasets.phantoms.ham10000:write_ham10000_download",
                        options=("num_train", "num_val", "num_test", "size")),
    prepare_module="datasets.prepare.ham10000",
    raw=RawInput(normalize=normalize_image, resize=resize_image, resize_label=resize_label),
    groups=lesion_groups,
))

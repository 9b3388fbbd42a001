"""Data sets for Sim-MPNet: Synapse (TransUNet format), ACDC (MT-UNet format), ISIC-2018 and SegPC-2021.

    from datasets import build_dataset, build_train_transform, DATASET_INFO
    from datasets.common import DataError

DATASET_INFO[name]: class_names (without background), default paths and split names,
in_chans (1 grey, 3 RGB) and kind ("volume": evaluation items are [D,H,W] volumes;
"image": evaluation items are single RGB images [3,H,W]).
"""
from __future__ import annotations

import os
from typing import Any

from .acdc import ACDC_CLASS_NAMES, ACDCDataset
from .augment import RandomGenerator
from .augment_rgb import RGBAugment
from .common import DataError, ListedSegmentationDataset, Transform
from .isic2018 import ISIC2018_CLASS_NAMES, ISIC2018_DIR_NAME, ISIC2018_LIST_DIR_NAME, ISIC2018Dataset
from .rgb import RGB_SPLITS
from .segpc2021 import SEGPC2021_CLASS_NAMES, SEGPC2021_DIR_NAME, SEGPC2021_LIST_DIR_NAME, SegPC2021Dataset
from .synapse import SYNAPSE_CLASS_NAMES, SynapseDataset

def _dataset_info(class_names: list[str], root_path: str, volume_path: str, list_dir: str,
                  splits: tuple[str, str | None, str], in_chans: int, kind: str) -> dict[str, Any]:
    """One DATASET_INFO entry; ``splits`` = (train, validation or None, test) list names."""
    train_split, val_split, test_split = splits
    return dict(class_names=list(class_names), root_path=root_path, volume_path=volume_path, list_dir=list_dir,
                train_split=train_split, val_split=val_split, test_split=test_split, in_chans=in_chans, kind=kind)


def _rgb_image_set(class_names: list[str], dir_name: str, list_dir_name: str) -> dict[str, Any]:
    """Entry of a prepared 2-D colour set: one folder of ``<entry>.npz`` for every split, lists train/val/test."""
    data = f"./data/{dir_name}"
    return _dataset_info(class_names, data, data, f"./lists/{list_dir_name}", RGB_SPLITS, in_chans=3, kind="image")


DATASET_INFO: dict[str, dict[str, Any]] = {
    "synapse": _dataset_info(SYNAPSE_CLASS_NAMES, "./data/Synapse/train_npz", "./data/Synapse/test_vol_h5",
                             "./lists/lists_Synapse", ("train", None, "test_vol"), in_chans=1, kind="volume"),
    "acdc": _dataset_info(ACDC_CLASS_NAMES, "./data/ACDC", "./data/ACDC", "./lists/lists_ACDC",
                          ("train", "valid", "test"), in_chans=1, kind="volume"),
    "isic2018": _rgb_image_set(ISIC2018_CLASS_NAMES, ISIC2018_DIR_NAME, ISIC2018_LIST_DIR_NAME),
    "segpc2021": _rgb_image_set(SEGPC2021_CLASS_NAMES, SEGPC2021_DIR_NAME, SEGPC2021_LIST_DIR_NAME),
}

_DATASET_CLASSES: dict[str, type[ListedSegmentationDataset]] = {
    "synapse": SynapseDataset, "acdc": ACDCDataset, "isic2018": ISIC2018Dataset, "segpc2021": SegPC2021Dataset,
}


def _known_key(name: str) -> str:
    key = name.lower()
    if key not in _DATASET_CLASSES:
        raise ValueError(f"unknown dataset '{name}'; known: {', '.join(sorted(_DATASET_CLASSES))}")
    return key


def build_train_transform(name: str, output_size: tuple[int, int] | list[int]) -> Transform:
    """Training augmentation of data set ``name``: callable (image, label, rng) -> (image, label) tensors.

    Grey sets (in_chans 1): :class:`RandomGenerator` -> (FloatTensor[1,H,W], LongTensor[H,W]);
    RGB sets (in_chans 3): :class:`RGBAugment` -> (FloatTensor[3,H,W] ImageNet-normalised, LongTensor[H,W]).
    """
    key = _known_key(name)
    return RGBAugment(output_size) if DATASET_INFO[key]["in_chans"] == 3 else RandomGenerator(output_size)


def build_dataset(
    name: str,
    base_dir: str | os.PathLike,
    list_dir: str | os.PathLike,
    split: str,
    num_classes: int,
    transform: Transform | None = None,
    seed: int = 1234,
) -> ListedSegmentationDataset:
    """Data set ``name`` ('synapse', 'acdc', 'isic2018', 'segpc2021') for one split; see DATASET_INFO.

    ``base_dir``: Synapse - the directory holding the split's files (train_npz or
    test_vol_h5); ACDC - the ACDC root (the split folder is appended); ISIC-2018 / SegPC-2021 -
    the prepared folder holding ``<entry>.npz``.
    Raises DataError for a missing list/data directory/listed file.
    """
    key = _known_key(name)
    return _DATASET_CLASSES[key](base_dir, list_dir, split, num_classes, transform=transform, seed=seed)


__all__ = [
    "build_dataset", "build_train_transform", "DATASET_INFO", "DataError", "SynapseDataset", "ACDCDataset",
    "ISIC2018Dataset", "SegPC2021Dataset",
]

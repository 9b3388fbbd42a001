"""Data sets for Sim-MPNet: Synapse (TransUNet format) and ACDC (MT-UNet format).

    from datasets import build_dataset, DATASET_INFO
    from datasets.common import DataError
"""
from __future__ import annotations

import os
from typing import Any

from .acdc import ACDC_CLASS_NAMES, ACDCDataset
from .common import DataError, ListedSegmentationDataset, Transform
from .synapse import SYNAPSE_CLASS_NAMES, SynapseDataset

DATASET_INFO: dict[str, dict[str, Any]] = {
    "synapse": dict(
        class_names=list(SYNAPSE_CLASS_NAMES),
        root_path="./data/Synapse/train_npz",
        volume_path="./data/Synapse/test_vol_h5",
        list_dir="./lists/lists_Synapse",
        train_split="train",
        val_split=None,
        test_split="test_vol",
    ),
    "acdc": dict(
        class_names=list(ACDC_CLASS_NAMES),
        root_path="./data/ACDC",
        volume_path="./data/ACDC",
        list_dir="./lists/lists_ACDC",
        train_split="train",
        val_split="valid",
        test_split="test",
    ),
}

_DATASET_CLASSES: dict[str, type[ListedSegmentationDataset]] = {"synapse": SynapseDataset, "acdc": ACDCDataset}


def build_dataset(
    name: str,
    base_dir: str | os.PathLike,
    list_dir: str | os.PathLike,
    split: str,
    num_classes: int,
    transform: Transform | None = None,
    seed: int = 1234,
) -> ListedSegmentationDataset:
    """Data set ``name`` ('synapse' or 'acdc') for one split; see DATASET_INFO for defaults.

    ``base_dir``: Synapse - the directory holding the split's files (train_npz or
    test_vol_h5); ACDC - the ACDC root (the split folder is appended).
    Raises DataError for a missing list/data directory/listed file.
    """
    key = name.lower()
    if key not in _DATASET_CLASSES:
        raise ValueError(f"unknown dataset '{name}'; known: {', '.join(sorted(_DATASET_CLASSES))}")
    return _DATASET_CLASSES[key](base_dir, list_dir, split, num_classes, transform=transform, seed=seed)


__all__ = ["build_dataset", "DATASET_INFO", "DataError", "SynapseDataset", "ACDCDataset"]

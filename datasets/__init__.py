"""Data sets for Sim-MPNet: Synapse (TransUNet format), ACDC (MT-UNet format), ISIC-2018 and SegPC-2021.

Each set is one :class:`DatasetSpec`, declared and registered in ``datasets/<name>.py`` (imported below); every table
the engine and the scripts need (class names, channels, kind, default paths and splits, reader, augmentation,
phantom, preparation script) is read from the registry:

    from datasets import DataError, build_dataset, build_train_transform, get_dataset, list_datasets
    spec = get_dataset("acdc")   # spec.class_names, spec.num_classes, spec.in_chans, spec.kind, spec.test_split, ...

This package imports neither ``utils`` nor ``networks`` (they import it).
"""
from __future__ import annotations

# Importing a set's module registers it.
from .acdc import ACDCDataset
from . import support_sets as support_sets  # registers the support_set batch context
from .bus import BUSDataset as BUSDataset
from .busi import BUSIDataset as BUSIDataset
from .common import DataError
from .glas import GlaSDataset as GlaSDataset
from .ham10000 import HAM10000Dataset as HAM10000Dataset
from .isic2018 import ISIC2018Dataset
from .registry import (
    DatasetSpec, PhantomSpec, build_dataset, build_train_transform, get_dataset, list_datasets, register_dataset,
    unregister_dataset,
)
from .segpc2021 import SegPC2021Dataset
from .synapse import SynapseDataset

__all__ = [
    "get_dataset", "list_datasets", "register_dataset", "unregister_dataset", "build_dataset", "build_train_transform",
    "DatasetSpec", "PhantomSpec", "DataError", "SynapseDataset", "ACDCDataset", "ISIC2018Dataset", "SegPC2021Dataset",
]

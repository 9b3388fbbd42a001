"""Data sets: Synapse (TransUNet format), ACDC (MT-UNet format), ISIC-2018, SegPC-2021, and MatchSeg's BUSI, BUS,
GlaS and HAM10000.

Each set is one :class:`DatasetSpec`, declared and registered in ``datasets/<name>.py`` (imported below); every table
the engine and the scripts need (class names, channels, kind, default paths and splits, reader, augmentation,
phantom, preparation script) is read from the registry:

    from datasets import DataError, build_dataset, build_train_transform, get_dataset, list_datasets
    spec = get_dataset("acdc")   # spec.class_names, spec.num_classes, spec.in_chans, spec.kind, spec.test_split, ...

By role: ``datasets/<set>.py`` the specs (format, reader, registry entry), ``base.py`` the readers' base class,
``io/`` every file format (npz / h5, NIfTI, DICOM, images, lists, pair folders, the atomic writer), ``phantoms/``
the synthetic sets (``python -m datasets.phantoms``), ``prepare/`` the preparations of the official downloads
(``python -m datasets.prepare.<set>``), ``episodes/`` the support sets of few-shot models. Old module paths are
answered by :mod:`datasets.moved`.

This package imports neither ``utils`` nor ``networks`` (they import it).
"""
from __future__ import annotations

from . import moved as _moved

# Importing a set's module registers it.
from .acdc import ACDCDataset
from .bus import BUSDataset as BUSDataset
from .busi import BUSIDataset as BUSIDataset
from .episodes import support_sets as support_sets  # registers the support_set batch context
from .errors import DataError
from .glas import GlaSDataset as GlaSDataset
from .ham10000 import HAM10000Dataset as HAM10000Dataset
from .isic2018 import ISIC2018Dataset
from .own import spec as spec  # registers the prepared own-data folders: --dataset data/NAME
from .registry import (
    DatasetSpec, PhantomSpec, build_dataset, build_train_transform, get_dataset, list_datasets, register_dataset,
    unregister_dataset,
)
from .segpc2021 import SegPC2021Dataset
from .synapse import SynapseDataset

_moved.install()  # old module paths: one line naming the new one (datasets/moved.py)

__all__ = [
    "get_dataset", "list_datasets", "register_dataset", "unregister_dataset", "build_dataset", "build_train_transform",
    "DatasetSpec", "PhantomSpec", "DataError", "SynapseDataset", "ACDCDataset", "ISIC2018Dataset", "SegPC2021Dataset",
]

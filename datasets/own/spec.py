"""The spec of a prepared own data set, built from its descriptor: what makes ``--dataset data/NAME`` (a path to a
folder written by ``python -m datasets.prepare.own``) work wherever ``--dataset NAME`` does.

:func:`datasets.registry.get_dataset` calls :func:`spec_from_folder` for a name that is a folder holding a
descriptor, so the engine and the scripts never name own data sets. The spec's ``name`` is the folder's absolute path:
a run records it as its data set (``options.run.dataset``), and ``test.py --checkpoint RUN/last.pth`` and
``predict.py`` find the set again from any working directory.

The prepared items are the existing formats (Synapse slices and volumes, the colour sets' npz), read by the existing
readers; what the descriptor adds:

* volume sets: each evaluation volume carries the voxel spacing of its prepared grid (``spacing``), so HD95 / ASD are
  in millimetres (the spec's ``distance_unit``); predict.py brings a new scan through the preparation's own path
  (:func:`datasets.own.scan.prepare_scan`: reorientation, in-plane resampling, intensities with the descriptor's
  statistics) and writes its labels back in the scan's grid; test-time NIfTI exports go back to each case's
  original grid and affine (``original_grid``);
* image sets: as the colour sets (ImageNet normalisation, resize to the network and back).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from ..augment import RandomGenerator
from ..augment_rgb import RGBAugment, normalize_image
from ..errors import DataError
from ..rgb import RGBSegmentationDataset, resize_image, resize_label
from ..registry import DatasetSpec, RawInput, register_folder_sets
from ..synapse import SynapseDataset
from .descriptor import Descriptor, descriptor_path, is_own_dataset, load_descriptor
from .geometry import to_original_grid
from .intensity import normalize_channel
from .scan import prepare_scan

__all__ = ["OwnVolumeDataset", "spec_from_folder", "spec_from_descriptor", "prepared_spacings", "is_own_dataset"]

TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT = "train", "val", "test"


@lru_cache(maxsize=32)
def _cached_descriptor(path: str, modified: int) -> Descriptor:  # keyed by the file's time: a re-prepared set
    return load_descriptor(path)


@lru_cache(maxsize=32)
def _cached_spec(path: str, modified: int) -> DatasetSpec:
    return spec_from_descriptor(_cached_descriptor(path, modified))


def _versioned(folder: str | os.PathLike) -> tuple[str, int]:
    """(the descriptor's absolute path, its modification time); DataError as load_descriptor for a missing one."""
    path = os.path.abspath(descriptor_path(folder))
    try:
        return path, os.stat(path).st_mtime_ns
    except OSError:
        load_descriptor(path)  # raises its one-line error
        raise


def folder_descriptor(folder: str | os.PathLike) -> Descriptor:
    """The descriptor of a prepared folder, read once per version of the file (DataError as load_descriptor)."""
    return _cached_descriptor(*_versioned(folder))


def prepared_spacings(list_dir: str | os.PathLike) -> dict[str, tuple[float, ...]]:
    """{case: (D, H, W) voxel size in mm of its prepared grid} of the own set whose lists are in ``list_dir``
    (``<folder>/lists``); empty for lists of any other set (no spacing: distances in pixels only)."""
    folder = os.path.dirname(os.path.abspath(os.fspath(list_dir)))
    if not is_own_dataset(folder):
        return {}
    return {name: tuple(case.prepared_spacing) for name, case in folder_descriptor(folder).cases.items()
            if case.prepared_spacing is not None}


class OwnVolumeDataset(SynapseDataset):
    """An own volume set's slices (``train``) and volumes (``val``, ``test``) in the Synapse format; each volume item
    also carries ``spacing``, the (D, H, W) voxel size in mm of its prepared grid (from the descriptor beside the
    lists), for HD95 / ASD in millimetres."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.spacings = prepared_spacings(self.list_dir) if self.is_volume else {}

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        spacing = self.spacings.get(item["case_name"])
        if spacing is not None:
            item["spacing"] = np.asarray(spacing, dtype=np.float64)
        return item


class OwnImageDataset(RGBSegmentationDataset):
    """An own 2-D set's images: the colour sets' npz items (ImageNet-normalised RGB)."""


def _volume_normalizer(descriptor: Descriptor) -> Callable[[np.ndarray], np.ndarray]:
    """The intensity normalisation of the set's single channel (raw voxels -> the model's): the preparation's own
    function with the descriptor's statistics."""
    (intensity,) = descriptor.intensity
    return lambda data: normalize_channel(data, intensity)


def _scan_preparation(descriptor: Descriptor):
    """RawInput.scan of a volume set: a new scan through the preparation's path, and the way back to its grid."""
    def scan(data: np.ndarray, affine: np.ndarray):
        volume, case = prepare_scan([np.asarray(data)], np.asarray(affine), descriptor)
        return np.asarray(volume, dtype=np.float32), lambda array: to_original_grid(array, case, descriptor)
    return scan


def _original_grid(descriptor: Descriptor):
    """DatasetSpec.original_grid of a volume set: a prepared-grid array of a case -> its original grid and affine."""
    def original(case_name: str, array: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        case = descriptor.cases.get(case_name)
        if case is None or case.affine is None:
            return None
        return to_original_grid(array, case, descriptor), np.asarray(case.affine, dtype=np.float64)
    return original


def spec_from_descriptor(descriptor: Descriptor) -> DatasetSpec:
    """The spec of a prepared own set (see the module docstring); DataError for what the models cannot take."""
    where = descriptor_path(descriptor.root)
    if descriptor.kind == "volume" and descriptor.in_chans != 1:
        raise DataError(where, f"{descriptor.in_chans}-channel volume sets are not supported yet (the models take one "
                               f"grey channel per slice); prepare one channel")
    common = dict(name=descriptor.root, title=f"{descriptor.name} (own data, {descriptor.source_format})",
                  class_names=tuple(descriptor.class_names), in_chans=descriptor.in_chans, kind=descriptor.kind,
                  root_path=descriptor.root_path, volume_path=descriptor.volume_path, list_dir=descriptor.list_dir,
                  train_split=TRAIN_SPLIT, val_split=descriptor.val_split, test_split=TEST_SPLIT,
                  folder=descriptor.root, prepare_module="datasets.prepare.own")
    if descriptor.kind == "volume":
        return DatasetSpec(**common, reader=OwnVolumeDataset, train_transform=RandomGenerator, distance_unit="mm",
                           raw=RawInput(normalize=_volume_normalizer(descriptor), orientation=descriptor.orientation,
                                        slice_axes=tuple(descriptor.slice_axes), scan=_scan_preparation(descriptor)),
                           original_grid=_original_grid(descriptor))
    return DatasetSpec(**common, reader=OwnImageDataset, train_transform=RGBAugment,
                       raw=RawInput(normalize=normalize_image, resize=resize_image, resize_label=resize_label))


def spec_from_folder(folder: str | os.PathLike) -> DatasetSpec:
    """The spec of the prepared own data set in ``folder`` (DataError naming the descriptor when it is not one), one
    object per version of the descriptor."""
    return _cached_spec(*_versioned(folder))


register_folder_sets(is_own_dataset, spec_from_folder)

"""Synapse multi-organ CT in the preprocessed TransUNet format.

Layout (as released by TransUNet and read by the Sim-MPNet release):

    <root>/train_npz/<case>_slice<NNN>.npz    keys image [H,W] float in [0,1], label [H,W]
    <root>/test_vol_h5/<case>.npy.h5          datasets image [D,H,W], label [D,H,W]
    lists/lists_Synapse/train.txt             lines like ``case0005_slice000``
    lists/lists_Synapse/test_vol.txt          lines like ``case0001``

``base_dir`` is the directory holding the split's files (``train_npz`` for ``train``,
``test_vol_h5`` for ``test_vol``), i.e. the release's ``--root_path`` / ``--volume_path``.
Labels: 0 background, then the 8 organs in :data:`SYNAPSE_CLASS_NAMES` order.
The registry entry (``get_dataset("synapse")``) is declared at the end of this file.
"""
from __future__ import annotations

import os

import numpy as np

from .augment import RandomGenerator
from .base import ListedSegmentationDataset
from .io.arrays import save_h5, save_npz
from .registry import DatasetSpec, PhantomSpec, RawInput, register_dataset

SYNAPSE_CLASS_NAMES = ("aorta", "gallbladder", "kidney_left", "kidney_right", "liver", "pancreas", "spleen", "stomach")
SYNAPSE_NUM_CLASSES = len(SYNAPSE_CLASS_NAMES) + 1
TRAIN_DIR_NAME = "train_npz"
TEST_DIR_NAME = "test_vol_h5"
TRAIN_SPLIT = "train"
TEST_SPLIT = "test_vol"
SLICE_SUFFIX = ".npz"
VOLUME_SUFFIX = ".npy.h5"
# The TransUNet 18/12 split of the 30 BTCV training CT scans (case numbers).
SYNAPSE_TEST_CASES = (1, 2, 3, 4, 8, 22, 25, 29, 32, 35, 36, 38)
SYNAPSE_TRAIN_CASES = (5, 6, 7, 9, 10, 21, 23, 24, 26, 27, 28, 30, 31, 33, 34, 37, 39, 40)
# Preprocessing of the raw BTCV CT, used by the preparation (datasets.prepare.synapse) and by prediction on raw scans
# (the spec's RawInput below): CT window, and the axes of the prepared [D, H, W].
HU_MIN, HU_MAX = -125.0, 275.0
SLICE_AXES = (2, 0, 1)  # nibabel's (x, y, z) -> [z, x, y] as TransUNet: axial slices, rows along x
# Voxel axes of the BTCV RawData images (nibabel axis codes), kept as stored by the preparation (no reorientation):
# x towards the patient's left, y towards posterior, z towards superior. predict.py reorients raw inputs to it.
RAW_ORIENTATION = "LPS"


def clip_and_scale_hu(volume: np.ndarray, hu_min: float = HU_MIN, hu_max: float = HU_MAX) -> np.ndarray:
    """Clip CT values to [hu_min, hu_max] and scale linearly to [0, 1] (float32)."""
    volume = np.clip(np.asarray(volume, dtype=np.float64), hu_min, hu_max)
    return ((volume - hu_min) / (hu_max - hu_min)).astype(np.float32)


def synapse_case_name(case_number: int) -> str:
    """``case0001`` style name of a BTCV case number."""
    return f"case{case_number:04d}"


def synapse_slice_name(case_name: str, slice_index: int) -> str:
    """``case0005_slice012`` style name of one training slice."""
    return f"{case_name}_slice{slice_index:03d}"


class SynapseDataset(ListedSegmentationDataset):
    """Synapse slices (``train``) or volumes (``test_vol``); ``base_dir`` holds the split's files."""

    image_key = "image"
    label_key = "label"
    slice_splits = (TRAIN_SPLIT,)
    volume_ndims = (3,)

    def entry_path(self, entry: str) -> str:
        suffix = VOLUME_SUFFIX if self.is_volume else SLICE_SUFFIX
        name = entry if entry.endswith(suffix) else entry + suffix
        return os.path.join(self.base_dir, name)

    def case_name(self, entry: str) -> str:
        suffix = VOLUME_SUFFIX if self.is_volume else SLICE_SUFFIX
        return entry[: -len(suffix)] if entry.endswith(suffix) else entry


def write_synapse_train_case(train_dir: str, case_name: str, image: np.ndarray, label: np.ndarray) -> list[str]:
    """Write every axial slice of a [D,H,W] case to ``train_dir``; return the list entries."""
    entries = []
    for index in range(image.shape[0]):
        entry = synapse_slice_name(case_name, index)
        save_npz(os.path.join(train_dir, entry + SLICE_SUFFIX), image=image[index], label=label[index])
        entries.append(entry)
    return entries


def write_synapse_test_case(test_dir: str, case_name: str, image: np.ndarray, label: np.ndarray) -> str:
    """Write a [D,H,W] test volume to ``test_dir``; return its list entry."""
    save_h5(os.path.join(test_dir, case_name + VOLUME_SUFFIX), image=image, label=label)
    return case_name


# ----------------------------------------------------------------------------- registry entry
SYNAPSE = register_dataset(DatasetSpec(
    name="synapse", title="Synapse multi-organ CT", class_names=SYNAPSE_CLASS_NAMES, in_chans=1, kind="volume",
    reader=SynapseDataset, root_path=f"./data/Synapse/{TRAIN_DIR_NAME}", volume_path=f"./data/Synapse/{TEST_DIR_NAME}",
    list_dir="./lists/lists_Synapse", train_split=TRAIN_SPLIT, val_split=None, test_split=TEST_SPLIT,
    train_transform=RandomGenerator,
    phantom=PhantomSpec(dir_name="Synapse", list_dir_name="lists_Synapse",
                        write="datasets.phantoms.synapse:write_synapse_phantom",
                        options=("num_train", "num_test", "size", "depth")),
    prepare_module="datasets.prepare.synapse",
    # Raw CT (HU) as the preparation reads it: window [-125, 275] scaled to [0, 1], BTCV voxel order, axial slices.
    raw=RawInput(normalize=clip_and_scale_hu, orientation=RAW_ORIENTATION, slice_axes=SLICE_AXES),
))

"""ACDC cardiac MRI in the preprocessed format used by MT-UNet, CASCADE, MERIT and EMCAD.

What the public repositories show (MT-UNet ``dataset/dataset_ACDC.py``, CASCADE
``train_ACDC.py``, the ``lists/lists_ACDC/*.txt`` files shipped with e.g. AgileFormer):

* files ``<root>/{train,valid,test}/*.npz`` with keys ``img`` and ``label``;
* list lines carry the ``.npz`` extension and are joined directly onto the split folder:
  ``case_001_sliceED_0.npz`` (train; slice index not zero-padded, ED/ES phase),
  ``case_002_volume_ED.npz`` (test volumes [D,H,W]);
  the case number is the ACDC patient number (``case_001`` = ``patient001``);
* the public ``valid.txt`` names 2-D slices (``case_019_sliceED_0.npz``) while the
  preparation here writes validation *volumes* (``case_019_volume_ED.npz``); the reader
  accepts both and returns a 2-D validation item as a one-slice volume [1,H,W].

``base_dir`` is the ACDC root; the split sub-folder is appended (MT-UNet passed
``<root>/test`` for the test split instead). Entries without ``.npz`` are accepted too.
Labels: 0 background, 1 RV, 2 Myo, 3 LV (the ACDC ground-truth values).
The registry entry (``get_dataset("acdc")``) is declared at the end of this file.
"""
from __future__ import annotations

import os

import numpy as np

from .augment import RandomGenerator
from .base import ListedSegmentationDataset
from .io.arrays import save_npz
from .registry import DatasetSpec, PhantomSpec, RawInput, register_dataset

ACDC_CLASS_NAMES = ("RV", "Myo", "LV")
ACDC_NUM_CLASSES = len(ACDC_CLASS_NAMES) + 1
ACDC_SPLITS = ("train", "valid", "test")
ACDC_PHASES = ("ED", "ES")
# The axes of the prepared [D, H, W], used by the preparation (datasets.prepare.acdc) and by prediction on raw scans
# (the spec's RawInput below): nibabel's (x, y, z) -> [z, x, y], the short-axis slices of the stored stack.
SLICE_AXES = (2, 0, 1)
FILE_SUFFIX = ".npz"


def minmax_normalize(volume: np.ndarray) -> np.ndarray:
    """Scale a volume to [0, 1] by its own min and max (constant volumes become 0): the preparation's intensity
    normalisation of the raw MRI, shared with prediction on raw scans (the spec's RawInput below) and the phantom."""
    volume = np.asarray(volume, dtype=np.float64)
    low, high = float(volume.min()), float(volume.max())
    if high <= low:
        return np.zeros(volume.shape, dtype=np.float32)
    return ((volume - low) / (high - low)).astype(np.float32)


def acdc_case_name(patient_number: int) -> str:
    """``case_001`` style name of an ACDC patient number."""
    return f"case_{patient_number:03d}"


def acdc_slice_entry(case_name: str, phase: str, slice_index: int) -> str:
    """List entry of one training slice, e.g. ``case_001_sliceED_0.npz``."""
    return f"{case_name}_slice{phase}_{slice_index}{FILE_SUFFIX}"


def acdc_volume_entry(case_name: str, phase: str) -> str:
    """List entry of one volume, e.g. ``case_002_volume_ED.npz``."""
    return f"{case_name}_volume_{phase}{FILE_SUFFIX}"


def acdc_entry_case_name(entry: str) -> str:
    """Case name of a list entry: the entry without its ``.npz`` extension."""
    return entry[: -len(FILE_SUFFIX)] if entry.endswith(FILE_SUFFIX) else entry


class ACDCDataset(ListedSegmentationDataset):
    """ACDC slices (``train``) or volumes (``valid``, ``test``); ``base_dir`` is the ACDC root."""

    image_key = "img"
    label_key = "label"
    slice_splits = ("train",)
    volume_ndims = (3, 2)  # public valid lists name 2-D slices: read as [1,H,W]

    def data_dir(self) -> str:
        return os.path.join(self.base_dir, self.split)

    def entry_path(self, entry: str) -> str:
        name = entry if entry.endswith(FILE_SUFFIX) else entry + FILE_SUFFIX
        return os.path.join(self.data_dir(), name)

    def case_name(self, entry: str) -> str:
        return acdc_entry_case_name(entry)


def write_acdc_slices(
    root: str, split: str, case_name: str, phase: str, image: np.ndarray, label: np.ndarray
) -> list[str]:
    """Write each slice of a [D,H,W] phase volume as a 2-D file; return the list entries."""
    entries = []
    for index in range(image.shape[0]):
        entry = acdc_slice_entry(case_name, phase, index)
        save_npz(os.path.join(root, split, entry), img=image[index], label=label[index])
        entries.append(entry)
    return entries


def write_acdc_volume(
    root: str, split: str, case_name: str, phase: str, image: np.ndarray, label: np.ndarray
) -> str:
    """Write one [D,H,W] phase volume; return its list entry."""
    entry = acdc_volume_entry(case_name, phase)
    save_npz(os.path.join(root, split, entry), img=image, label=label)
    return entry


def write_acdc_case(
    root: str, split: str, case_name: str, phase: str, image: np.ndarray, label: np.ndarray
) -> list[str]:
    """Write one phase of a case in its split's form (train: slices, else a volume)."""
    if split == "train":
        return write_acdc_slices(root, split, case_name, phase, image, label)
    return [write_acdc_volume(root, split, case_name, phase, image, label)]


# ----------------------------------------------------------------------------- registry entry
ACDC = register_dataset(DatasetSpec(
    name="acdc", title="ACDC cardiac MRI", class_names=ACDC_CLASS_NAMES, in_chans=1, kind="volume", reader=ACDCDataset,
    root_path="./data/ACDC", volume_path="./data/ACDC", list_dir="./lists/lists_ACDC",
    train_split="train", val_split="valid", test_split="test", train_transform=RandomGenerator,
    phantom=PhantomSpec(dir_name="ACDC", list_dir_name="lists_ACDC", write="datasets.phantoms.acdc:write_acdc_phantom",
                        options=("num_train", "num_valid", "num_test", "size", "depth")),
    prepare_module="datasets.prepare.acdc",
    # Raw MRI as the preparation reads it: min-max normalised per volume, slices along the stored third axis (short-
    # axis stacks are oblique: no anatomical reorientation, the voxel order is kept as stored).
    raw=RawInput(normalize=minmax_normalize, orientation=None, slice_axes=SLICE_AXES),
))

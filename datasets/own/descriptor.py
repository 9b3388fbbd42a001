"""The descriptor of a prepared own data set, ``<folder>/dataset_descriptor.json``: everything the engine needs to
build the set's spec (classes, channels, kind, layout, splits), to normalise a new scan exactly as training did
(intensity scheme and statistics, geometry) and to write predictions back in each case's original grid.

Written by :mod:`datasets.prepare.own`, read by :func:`load_descriptor`; the schema is the JSON of
:class:`Descriptor` (``version`` :data:`DESCRIPTOR_VERSION`).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import DataError
from ..io.atomic import atomic_write_text

__all__ = ["DESCRIPTOR_NAME", "DESCRIPTOR_VERSION", "LIST_DIR_NAME", "TRAIN_DIR_NAME", "VOLUME_DIR_NAME",
           "IMAGE_DIR_NAME", "ChannelIntensity", "CaseGeometry", "Descriptor", "is_own_dataset", "descriptor_path",
           "load_descriptor", "write_descriptor"]

DESCRIPTOR_NAME = "dataset_descriptor.json"
DESCRIPTOR_VERSION = 1
LIST_DIR_NAME = "lists"  # <folder>/lists/{train,val,test}.txt
TRAIN_DIR_NAME = "train_npz"  # volume sets: training slices, the Synapse format
VOLUME_DIR_NAME = "test_vol_h5"  # volume sets: validation and test volumes, the Synapse format
IMAGE_DIR_NAME = "images"  # image sets: one npz per image, the colour sets' format


@dataclass(frozen=True)
class ChannelIntensity:
    """How one input channel's intensities were normalised.

    ``scheme``: ``"ct"`` (clip to ``clip`` = the training foreground's 0.5/99.5 percentiles, then (x - mean) / std
    with the foreground's mean and std), ``"window"`` (clip to ``clip`` = (low, high), scale to [0, 1]),
    ``"zscore"`` (per case: (x - mean) / std of that case's voxels; ``mean``/``std`` unused), ``"none"`` (nnU-Net's
    ``noNorm``: as stored), ``"rgb"`` (uint8
    stored, ImageNet-normalised by the reader)."""

    name: str
    scheme: str
    clip: tuple[float, float] | None = None
    mean: float | None = None
    std: float | None = None


@dataclass(frozen=True)
class CaseGeometry:
    """What it takes to bring one case's prediction back to its original file grid.

    Volume sets: ``shape`` = the original voxel array shape (x, y, z); ``affine`` = its voxel -> world (RAS, mm)
    4x4 affine; ``orientation`` = its axis codes (nibabel convention); ``spacing`` = its voxel sizes (x, y, z) mm;
    ``prepared_shape`` = [D, H, W] as stored prepared; ``prepared_spacing`` = (D, H, W) mm of the prepared grid.
    Image sets: ``shape`` = the original (H, W); ``prepared_shape`` = the stored (H, W); others None.
    ``split``: the split the case is in; ``source``: the label file (or first image file) it came from."""

    split: str
    shape: tuple[int, ...]
    prepared_shape: tuple[int, ...]
    source: str = ""
    affine: tuple[tuple[float, ...], ...] | None = None
    orientation: str | None = None
    spacing: tuple[float, ...] | None = None
    prepared_spacing: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Descriptor:
    """A prepared own data set (see the module docstring). ``class_names`` excludes the background;
    ``label_values[i]`` is the source label value that prepared class ``i`` stands for (0 first)."""

    name: str
    kind: str  # "volume" | "image"
    source_format: str  # "nnunet" | "msd" | "folder"
    class_names: tuple[str, ...]
    label_values: tuple[int, ...]
    channel_names: tuple[str, ...]
    in_chans: int  # channels of the prepared items (3 for image sets)
    intensity: tuple[ChannelIntensity, ...]
    splits: dict[str, tuple[str, ...]]  # split -> case names ("train", "val" (may be empty), "test")
    split_source: str  # how the splits were chosen, in words
    cases: dict[str, CaseGeometry]
    file_ending: str = ""
    # Volume sets: the canonical orientation (axis codes of x, y, z after reorientation) and the transpose to the
    # prepared [D, H, W]; the in-plane (H, W) spacing every case was resampled to (the training cases' median).
    orientation: str | None = None
    slice_axes: tuple[int, int, int] | None = None
    target_spacing: tuple[float, float] | None = None
    # Image sets: the (H, W) every image was resized to. Volume sets: median prepared in-plane (H, W) of training.
    image_size: tuple[int, int] | None = None
    version: int = DESCRIPTOR_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    root: str = ""  # the prepared folder (set by load_descriptor, not stored)

    @property
    def num_classes(self) -> int:
        return len(self.class_names) + 1

    @property
    def list_dir(self) -> str:
        return os.path.join(self.root, LIST_DIR_NAME)

    @property
    def root_path(self) -> str:
        """The folder of the training items (the reader's ``base_dir`` of the train split)."""
        return os.path.join(self.root, TRAIN_DIR_NAME if self.kind == "volume" else IMAGE_DIR_NAME)

    @property
    def volume_path(self) -> str:
        """The folder of the evaluation items (the reader's ``base_dir`` of the val and test splits)."""
        return os.path.join(self.root, VOLUME_DIR_NAME if self.kind == "volume" else IMAGE_DIR_NAME)

    @property
    def val_split(self) -> str | None:
        return "val" if self.splits.get("val") else None

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("root")
        return json.dumps(data, indent=1)


def descriptor_path(folder_or_file: str | os.PathLike) -> str:
    """``<folder>/dataset_descriptor.json`` (a path to the file itself is returned as is)."""
    path = os.fspath(folder_or_file)
    return path if os.path.basename(path) == DESCRIPTOR_NAME else os.path.join(path, DESCRIPTOR_NAME)


def is_own_dataset(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a prepared own data set (its descriptor file)."""
    return os.path.isfile(descriptor_path(folder))


def _tuple(value: Any) -> Any:
    return tuple(_tuple(item) for item in value) if isinstance(value, list) else value


def load_descriptor(folder_or_file: str | os.PathLike) -> Descriptor:
    """The descriptor of a prepared folder (or of the json file); DataError naming the file when missing, not JSON,
    of another version or lacking a field."""
    path = descriptor_path(folder_or_file)
    if not os.path.isfile(path):
        raise DataError(path, "no data set descriptor here: prepare the folder with python -m datasets.prepare.own "
                              "--src RAW --out FOLDER")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if data.get("version") != DESCRIPTOR_VERSION:
            raise DataError(path, f"descriptor version {data.get('version')!r}, this code reads "
                                  f"{DESCRIPTOR_VERSION}: prepare the set again")
        data = {key: _tuple(value) for key, value in data.items()}
        data["intensity"] = tuple(ChannelIntensity(**{key: _tuple(value) for key, value in item.items()})
                                  for item in data["intensity"])
        data["cases"] = {name: CaseGeometry(**{key: _tuple(value) for key, value in case.items()})
                         for name, case in data["cases"].items()}
        data["splits"] = {split: tuple(names) for split, names in data["splits"].items()}
        return Descriptor(**data, root=os.path.dirname(os.path.abspath(path)))
    except DataError:
        raise
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DataError(path, f"not a valid data set descriptor: {exc}") from exc


def write_descriptor(folder: str | os.PathLike, descriptor: Descriptor) -> str:
    """Atomically write ``<folder>/dataset_descriptor.json``; returns its path."""
    path = descriptor_path(folder)
    atomic_write_text(path, descriptor.to_json() + "\n")
    return path

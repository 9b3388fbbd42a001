"""The base class of the data sets' readers: the files named by a split list, loaded and validated.

Every reader (Synapse, ACDC, the colour sets) reads its files through :func:`load_pair` (or its own validated
loader, :func:`datasets.rgb.load_rgb_pair`), so every check (missing file, corrupt or truncated file, missing key,
wrong ndim, NaN/inf in the image, image/label shape mismatch, labels outside ``[0, num_classes)``) lives in one place
and raises :class:`~datasets.errors.DataError` naming the file and the problem.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .checks import validate_pair
from .errors import DataError
from .io.arrays import H5_SUFFIX, NPZ_SUFFIX, read_h5, read_npz
from .io.lists import read_list

__all__ = ["Transform", "check_files_exist", "load_pair", "ListedSegmentationDataset"]


def check_files_exist(paths: Sequence[str], list_path: str) -> None:
    """Raise DataError naming the first listed file that is missing (and how many are)."""
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise DataError(
            missing[0],
            f"listed in {list_path} but does not exist "
            f"({len(missing)} of {len(paths)} listed files missing)",
        )


def load_pair(
    path: str | os.PathLike,
    image_key: str,
    label_key: str,
    num_classes: int,
    ndims: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """Load and validate (image float32, label int64) from an ``.npz`` or ``.h5`` file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(path, "file does not exist")
    if path.endswith(NPZ_SUFFIX):
        arrays = read_npz(path, (image_key, label_key))
    elif path.endswith(H5_SUFFIX):
        arrays = read_h5(path, (image_key, label_key))
    else:
        raise DataError(path, f"unsupported file type (expected {NPZ_SUFFIX} or {H5_SUFFIX})")
    return validate_pair(path, arrays[image_key], arrays[label_key], num_classes, ndims)


Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[torch.Tensor, torch.Tensor]]


class ListedSegmentationDataset(Dataset):
    """Files named by ``<list_dir>/<split>.txt``: 2-D training slices or evaluation volumes.

    Subclasses say where an entry's file lives (:meth:`entry_path`), which keys hold image
    and label, and how the case is named. Training items come back as tensors
    (image [1,h,w] float, label [h,w] long), augmented by ``transform(image, label, rng)``
    with ``rng = np.random.default_rng([seed, epoch, index])``; volume items come back as
    numpy arrays (image float32 [D,H,W], label int64 [D,H,W]).
    """

    image_key = "image"
    label_key = "label"
    # (mean, std) per channel with which items' intensities were normalised from [0, 1]; None: items are in [0, 1]
    # units as prepared (the grey volume sets). The engine reads it to hand a model the input it asks for.
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    slice_splits: tuple[str, ...] = ("train",)
    volume_ndims: tuple[int, ...] = (3,)
    slice_ndims: tuple[int, ...] = (2,)

    def __init__(
        self,
        base_dir: str | os.PathLike,
        list_dir: str | os.PathLike,
        split: str,
        num_classes: int,
        transform: Transform | None = None,
        seed: int = 1234,
    ) -> None:
        self.base_dir = os.fspath(base_dir)
        self.list_dir = os.fspath(list_dir)
        self.split = split
        self.num_classes = int(num_classes)
        self.is_volume = split not in self.slice_splits
        if self.is_volume and transform is not None:
            raise ValueError(f"split '{split}' holds volumes; transforms apply to training slices only")
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

        self.list_path = os.path.join(self.list_dir, f"{split}.txt")
        self.entries = read_list(self.list_path)
        data_dir = self.data_dir()
        if not os.path.isdir(data_dir):
            raise DataError(data_dir, "data directory does not exist")
        self.paths = [self.entry_path(entry) for entry in self.entries]
        check_files_exist(self.paths, self.list_path)

    # -- layout hooks (overridden per data set)
    def data_dir(self) -> str:
        """Directory that holds this split's files."""
        return self.base_dir

    def entry_path(self, entry: str) -> str:
        """File path of one list entry."""
        raise NotImplementedError

    def case_name(self, entry: str) -> str:
        """Name reported for one list entry."""
        return entry

    # -- torch Dataset API
    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream; call once per epoch before iterating."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Validated (image float32, label int64) of one entry, without augmentation."""
        ndims = self.volume_ndims if self.is_volume else self.slice_ndims
        image, label = load_pair(self.paths[index], self.image_key, self.label_key, self.num_classes, ndims)
        if self.is_volume and image.ndim == 2:  # a single slice stored for evaluation: D = 1
            image, label = image[None], label[None]
        return image, label

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label = self.load(index)
        name = self.case_name(self.entries[index])
        if self.is_volume:
            return {"image": image, "label": label, "case_name": name}
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image_t, label_t = self.transform(image, label, rng)
        else:
            image_t, label_t = torch.from_numpy(image).unsqueeze(0), torch.from_numpy(label)
        return {"image": image_t, "label": label_t, "case_name": name}

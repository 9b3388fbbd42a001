"""Shared data-set machinery: errors, list files, validated loading (npz/h5, raw NIfTI), atomic writing.

Both data sets (Synapse, ACDC) read their files through :func:`load_pair`, so every
check (missing file, corrupt or truncated file, missing key, wrong ndim, NaN/inf in the
image, image/label shape mismatch, labels outside ``[0, num_classes)``) lives here once and
raises :class:`DataError` naming the file and the problem.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

NPZ_SUFFIX = ".npz"
H5_SUFFIX = ".h5"

__all__ = [
    "DataError", "read_list", "check_files_exist", "read_npz", "load_pair", "validate_pair", "check_finite",
    "check_labels", "load_nifti", "load_nifti_pair",
    "atomic_path", "save_npz", "save_h5", "write_list", "minmax_normalize",
    "ListedSegmentationDataset",
]


class DataError(Exception):
    """A problem with one data file or directory; ``str(err) == f"{path}: {problem}"``."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


# ----------------------------------------------------------------------------- list files
def read_list(list_path: str | os.PathLike) -> list[str]:
    """Non-blank, stripped lines of a split list file; DataError if missing or empty."""
    list_path = os.fspath(list_path)
    if not os.path.isfile(list_path):
        raise DataError(list_path, "list file does not exist")
    with open(list_path, encoding="utf-8") as handle:
        entries = [line.strip() for line in handle if line.strip()]
    if not entries:
        raise DataError(list_path, "list file is empty (no entries)")
    return entries


def check_files_exist(paths: Sequence[str], list_path: str) -> None:
    """Raise DataError naming the first listed file that is missing (and how many are)."""
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise DataError(
            missing[0],
            f"listed in {list_path} but does not exist "
            f"({len(missing)} of {len(paths)} listed files missing)",
        )


# ----------------------------------------------------------------------------- loading
def read_npz(path: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Arrays ``keys`` of an ``.npz`` file (no pickles); DataError naming the file for a missing key or a corrupt or
    truncated archive."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in keys if key not in archive.files]
            if missing:
                raise DataError(path, f"missing key '{missing[0]}' (found keys: {', '.join(archive.files) or 'none'})")
            return {key: np.asarray(archive[key]) for key in keys}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError) as exc:
        raise DataError(path, f"cannot read npz file (corrupt or truncated): {exc}") from exc


def read_h5(path: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        with h5py.File(path, "r") as handle:
            found = list(handle.keys())
            for key in keys:
                if key not in handle:
                    raise DataError(path, f"missing dataset '{key}' (found: {', '.join(found) or 'none'})")
                if not isinstance(handle[key], h5py.Dataset):
                    raise DataError(path, f"'{key}' is not a dataset")
            return {key: np.asarray(handle[key][()]) for key in keys}
    except DataError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise DataError(path, f"cannot read HDF5 file (corrupt or truncated): {exc}") from exc


def validate_pair(
    path: str,
    image: np.ndarray,
    label: np.ndarray,
    num_classes: int,
    ndims: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """Check an (image, label) pair and return them as (float32, int64); DataError otherwise."""
    if image.ndim not in ndims:
        expected = " or ".join(map(str, ndims))
        raise DataError(path, f"image has {image.ndim} dimensions {image.shape}, expected {expected}")
    if image.shape != label.shape:
        raise DataError(path, f"image/label shape mismatch: image {image.shape} vs label {label.shape}")
    if not (np.issubdtype(image.dtype, np.number) and np.issubdtype(label.dtype, np.number)):
        raise DataError(path, f"non-numeric arrays (image {image.dtype}, label {label.dtype})")
    if image.size == 0:
        raise DataError(path, f"empty image {image.shape}")
    check_finite(path, image)
    check_labels(path, label, num_classes)
    return image.astype(np.float32, copy=False), label.astype(np.int64, copy=False)


def check_finite(path: str, image: np.ndarray) -> None:
    """DataError if the image holds NaN or inf."""
    finite = np.isfinite(image)
    if not finite.all():
        raise DataError(path, f"image contains {int((~finite).sum())} NaN/inf values")


def check_labels(path: str, label: np.ndarray, num_classes: int) -> None:
    """DataError unless every label value is an integer in [0, num_classes)."""
    if np.issubdtype(label.dtype, np.floating) and not np.array_equal(label, np.round(label)):
        raise DataError(path, "label contains non-integer values")
    low, high = label.min(), label.max()
    if low < 0 or high >= num_classes:
        raise DataError(path, f"label values in [{low:g}, {high:g}] outside [0, {num_classes}) "
                              f"(num_classes={num_classes})")


def load_nifti(path: str | os.PathLike) -> np.ndarray:
    """Voxel array of a NIfTI file (scaling applied); DataError if missing or unreadable."""
    import nibabel as nib  # only the preparation scripts need it

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(path, "file does not exist")
    try:
        return np.asanyarray(nib.load(path).dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt/truncated files
        raise DataError(path, f"cannot read NIfTI file (corrupt or truncated): {exc}") from exc


def load_nifti_pair(image_path: str, label_path: str, num_label_values: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw 3-D image and label volumes, checked: same shape, finite image, labels in range.

    Returns (image float64, label int64) in nibabel's (x, y, z) order.
    """
    image, label = load_nifti(image_path), load_nifti(label_path)
    if image.ndim != 3:
        raise DataError(image_path, f"expected a 3-D volume, got shape {image.shape}")
    if image.shape != label.shape:
        raise DataError(label_path, f"label shape {label.shape} differs from image shape {image.shape}")
    check_finite(image_path, image)
    check_labels(label_path, label, num_label_values)
    return np.asarray(image, dtype=np.float64), np.rint(label).astype(np.int64)


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


# ----------------------------------------------------------------------------- writing
@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary file name next to ``path``; on success os.replace() it onto ``path``.

    On any error the temporary file is removed, so ``path`` is either the old file or the
    complete new one, never half-written.
    """
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Atomically write an uncompressed ``.npz`` (the format TransUNet/MT-UNet use)."""
    with atomic_path(path) as tmp_path, open(tmp_path, "wb") as handle:
        np.savez(handle, **arrays)


def save_h5(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Atomically write an HDF5 file with one dataset per array."""
    with atomic_path(path) as tmp_path, h5py.File(tmp_path, "w") as h5:
        for key, value in arrays.items():
            h5.create_dataset(key, data=value)


def write_list(path: str | os.PathLike, entries: Iterable[str]) -> None:
    """Atomically write a split list, one entry per line."""
    text = "".join(f"{entry}\n" for entry in entries)
    with atomic_path(path) as tmp_path, open(tmp_path, "w", encoding="utf-8") as handle:
        handle.write(text)


def split_in_blocks(items: Sequence[Any], fractions: Sequence[float], splits: Sequence[str], seed: int | None,
                    what: str = "items") -> dict[str, list[Any]]:
    """Contiguous blocks of the sorted ``items``, one per split, each returned sorted.

    Sizes: every split after the first gets round(fraction * N) items, at least 1; the first split gets the rest.
    ``seed=None`` keeps the sorted order; ``seed=N`` permutes the sorted items with ``np.random.default_rng(N)`` first.
    Raises ValueError (naming ``what``) for bad fractions, repeated items, or too few items.
    """
    if len(fractions) != len(splits) or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be {len(splits)} non-negative numbers summing to 1, got {list(fractions)}")
    ordered = sorted(items)
    count = len(ordered)
    if len(set(ordered)) != count:
        raise ValueError(f"{what} must be unique")
    if count < len(splits):
        raise ValueError(f"need at least {len(splits)} {what} to split, got {count}")
    sizes = [max(1, round(fraction * count)) for fraction in fractions[1:]]
    first = count - sum(sizes)
    if first < 1:
        raise ValueError(f"{count} {what} leave none for {splits[0]} with fractions {list(fractions)}")
    if seed is not None:
        ordered = [ordered[i] for i in np.random.default_rng(seed).permutation(count)]
    bounds = np.cumsum([0, first, *sizes])
    return {split: sorted(ordered[bounds[i]:bounds[i + 1]]) for i, split in enumerate(splits)}


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def minmax_normalize(volume: np.ndarray) -> np.ndarray:
    """Scale a volume to [0, 1] by its own min and max (constant volumes become 0)."""
    volume = np.asarray(volume, dtype=np.float64)
    low, high = float(volume.min()), float(volume.max())
    if high <= low:
        return np.zeros(volume.shape, dtype=np.float32)
    return ((volume - low) / (high - low)).astype(np.float32)


# ----------------------------------------------------------------------------- data set
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

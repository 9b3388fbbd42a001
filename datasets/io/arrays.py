"""Files of named arrays, the prepared formats: ``.npz`` (uncompressed, as TransUNet / MT-UNet release them) and
HDF5 ``.h5`` (one dataset per array). Reading names the file for a missing key or a corrupt or truncated file;
writing is atomic."""
from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence

import h5py
import numpy as np

from ..errors import DataError
from .atomic import atomic_path

__all__ = ["NPZ_SUFFIX", "H5_SUFFIX", "read_npz", "read_h5", "save_npz", "save_h5"]

NPZ_SUFFIX = ".npz"
H5_SUFFIX = ".h5"


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
    """Datasets ``keys`` of an HDF5 file; DataError naming the file for a missing dataset or a corrupt file."""
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


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Atomically write an uncompressed ``.npz`` (the format TransUNet/MT-UNet use)."""
    with atomic_path(path) as tmp_path, open(tmp_path, "wb") as handle:
        np.savez(handle, **arrays)


def save_h5(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Atomically write an HDF5 file with one dataset per array."""
    with atomic_path(path) as tmp_path, h5py.File(tmp_path, "w") as h5:
        for key, value in arrays.items():
            h5.create_dataset(key, data=value)

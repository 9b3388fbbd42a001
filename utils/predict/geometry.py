"""The geometry of a raw volume for prediction: from its voxel order (x, y, z) to the training layout [D, H, W] and
back, and the size of its voxels."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from datasets.errors import DataError

__all__ = ["SliceLayout", "voxel_volume_mm3"]


@dataclass(frozen=True)
class SliceLayout:
    """From a raw volume's voxels (x, y, z) to the prepared layout [D, H, W] and back: a reorientation to the
    training orientation (nibabel orientation transform; None keeps the stored voxel order), then ``slice_axes``."""

    transform: np.ndarray | None
    inverse: np.ndarray | None
    slice_axes: tuple[int, int, int]

    @classmethod
    def of(cls, affine: np.ndarray, orientation: str | None, slice_axes: Sequence[int],
           path: str | os.PathLike = "") -> SliceLayout:
        """The layout of a volume with ``affine`` for a model trained in ``orientation`` (axis codes or None)."""
        if orientation is None:
            return cls(None, None, tuple(slice_axes))
        target = nib.orientations.axcodes2ornt(tuple(orientation))
        current = nib.orientations.io_orientation(affine)
        if np.isnan(current).any():
            raise DataError(path, f"cannot tell the voxel axes' directions from the affine {affine[:3].tolist()}")
        return cls(nib.orientations.ornt_transform(current, target), nib.orientations.ornt_transform(target, current),
                   tuple(slice_axes))

    def forward(self, data: np.ndarray) -> np.ndarray:
        """(x, y, z) voxels -> [D, H, W] in the training orientation."""
        if self.transform is not None:
            data = nib.orientations.apply_orientation(data, self.transform)
        return np.ascontiguousarray(np.transpose(data, self.slice_axes))

    def backward(self, array: np.ndarray) -> np.ndarray:
        """[D, H, W] (or [K, D, H, W]) in the training layout -> the input's voxel order (x, y, z) (or [K, x, y, z])."""
        leading = array.ndim - 3
        array = np.transpose(array, (*range(leading), *(leading + axis for axis in np.argsort(self.slice_axes))))
        if self.inverse is not None:
            array = np.moveaxis(array, range(leading), range(3, 3 + leading))  # orientation acts on the first axes
            array = nib.orientations.apply_orientation(array, self.inverse)
            array = np.moveaxis(array, range(3, 3 + leading), range(leading))
        return np.ascontiguousarray(array)


def voxel_volume_mm3(affine: np.ndarray, mm_per_unit: float = 1.0) -> float:
    """Volume of one voxel in mm^3: |det| of the affine's 3x3 part (in the header's spatial unit, converted)."""
    return float(abs(np.linalg.det(affine[:3, :3]))) * mm_per_unit ** 3

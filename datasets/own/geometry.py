"""Geometry of own volume sets: every case to one canonical voxel orientation, slices along one axis, in-plane
resampling to one spacing (the training cases' median, nnU-Net's rule) so that a millimetre is the same number of
pixels in every case, and the way back to the original file's grid for predictions.

Orientation follows nibabel's axis codes (RAS+ world). The canonical order is :data:`CANONICAL_ORIENTATION` = LPS
(x towards the patient's left, y towards posterior, z towards superior): an axial slice [y, x] then shows the patient
as radiologists view it (anterior up, the patient's right on the left).
"""
from __future__ import annotations

from collections.abc import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..errors import DataError
from ..rgb import resize_label
from .descriptor import CaseGeometry, Descriptor

__all__ = ["CANONICAL_ORIENTATION", "IMAGE_ORDER", "LABEL_ORDER", "orientation_codes", "voxel_spacing",
           "to_canonical", "canonical_spacing", "slice_axes_for", "choose_slice_axes", "target_spacing",
           "resample_inplane", "resampled_shape", "prepare_geometry", "to_original_grid", "to_source_values",
           "image_to_original"]

CANONICAL_ORIENTATION = "LPS"
IMAGE_ORDER = 3  # cubic spline for intensities (nnU-Net's order for data)
LABEL_ORDER = 0  # nearest neighbour for labels
ANISOTROPY_RATIO = 1.01  # an axis counts as the coarsest when its median spacing exceeds the others' by 1 %


def orientation_codes(affine: np.ndarray, path: str = "") -> str:
    """The axis codes of an affine's voxel axes ('RAS', 'LPS', ...); DataError for a degenerate affine."""
    ornt = nib.orientations.io_orientation(affine)
    if np.isnan(ornt).any():
        raise DataError(path, f"cannot tell the voxel axes' directions from the affine "
                              f"{np.round(affine[:3], 4).tolist()}")
    return "".join(nib.orientations.ornt2axcodes(ornt))


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel sizes (x, y, z) in mm: the lengths of the affine's columns (to 1e-6 mm: headers store float32)."""
    return np.round(np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0), 6)


def _transform(source: str, target: str) -> np.ndarray:
    return nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(tuple(source)),
                                           nib.orientations.axcodes2ornt(tuple(target)))


def to_canonical(data: np.ndarray, orientation: str) -> np.ndarray:
    """Voxels (x, y, z[, ...]) stored in ``orientation`` -> the canonical orientation (flips and axis swaps only:
    exact)."""
    return nib.orientations.apply_orientation(data, _transform(orientation, CANONICAL_ORIENTATION))


def canonical_spacing(spacing: Sequence[float], orientation: str) -> np.ndarray:
    """Voxel sizes of the canonical axes from the stored axes' sizes."""
    transform = _transform(orientation, CANONICAL_ORIENTATION)
    out = np.empty(3)
    for axis, (new_axis, _) in enumerate(transform):
        out[int(new_axis)] = spacing[axis]
    return out


def slice_axes_for(axis: int) -> tuple[int, int, int]:
    """The transpose from canonical (x, y, z) to [D, H, W] with slices along ``axis``: axial [z, y, x] (rows
    anterior -> posterior, columns right -> left), sagittal [x, z, y], coronal [y, z, x]."""
    return {2: (2, 1, 0), 0: (0, 2, 1), 1: (1, 2, 0)}[axis]


def choose_slice_axes(canonical_spacings: Sequence[Sequence[float]]) -> tuple[int, int, int]:
    """Slices along the canonical axis of the largest median spacing (the acquisition's coarse axis: nnU-Net's 2-D
    rule for anisotropic data), axial when no axis is coarser than the others by :data:`ANISOTROPY_RATIO`."""
    median = np.median(np.asarray(canonical_spacings, dtype=np.float64), axis=0)
    axis = int(np.argmax(median))
    others = np.delete(median, axis)
    if median[axis] <= ANISOTROPY_RATIO * others.max():
        axis = 2
    return slice_axes_for(axis)


def target_spacing(canonical_spacings: Sequence[Sequence[float]], slice_axes: Sequence[int]) -> tuple[float, float]:
    """The in-plane (H, W) spacing to resample to: the median over the training cases (nnU-Net's rule)."""
    spacings = np.asarray(canonical_spacings, dtype=np.float64)[:, list(slice_axes)]
    median = np.median(spacings, axis=0)
    return float(median[1]), float(median[2])


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, int]:
    """The in-plane (H, W) after resampling from ``spacing`` to ``target`` (mm), at least 1 pixel each."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def resample_inplane(volume: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """Each slice of [D, H, W] (or [D, C, H, W]) resampled to ``shape`` (H, W): pixels as areas (grid mode), edges
    extended; order 3 for images, 0 for labels."""
    shape = tuple(int(n) for n in shape)
    if volume.shape[-2:] == shape:
        return volume
    factors = (1.0,) * (volume.ndim - 2) + tuple(n / m for n, m in zip(shape, volume.shape[-2:]))
    out = ndimage.zoom(volume, factors, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)
    if out.shape[-2:] != shape:  # zoom rounds each axis itself: pin the exact shape
        raise AssertionError(f"zoom gave {out.shape[-2:]}, expected {shape}")
    return out


def prepare_geometry(data: np.ndarray, affine: np.ndarray, slice_axes: Sequence[int], target: Sequence[float],
                     order: int, path: str = "") -> tuple[np.ndarray, dict]:
    """Stored voxels (x, y, z[, c]) -> the prepared [D, H, W] (or [D, C, H, W]) at the target in-plane spacing, and
    the case's geometry fields (shape, affine, orientation, spacing, prepared_shape, prepared_spacing)."""
    orientation = orientation_codes(affine, path)
    spacing = voxel_spacing(affine)
    canonical = to_canonical(data, orientation)
    axes = tuple(slice_axes) + tuple(range(3, data.ndim))
    layered = np.transpose(canonical, axes)  # [D, H, W(, C)]
    if layered.ndim == 4:
        layered = np.moveaxis(layered, 3, 1)  # [D, C, H, W]
    plane_spacing = canonical_spacing(spacing, orientation)[list(slice_axes)]
    shape = resampled_shape(layered.shape[-2:], plane_spacing[1:], target)
    out = resample_inplane(np.ascontiguousarray(layered), shape, order)
    geometry = dict(shape=tuple(int(n) for n in data.shape[:3]), affine=tuple(map(tuple, np.asarray(affine).tolist())),
                    orientation=orientation, spacing=tuple(float(s) for s in spacing),
                    prepared_shape=(int(out.shape[0]), *shape),
                    prepared_spacing=(float(plane_spacing[0]), float(target[0]), float(target[1])))
    return np.ascontiguousarray(out), geometry


def to_original_grid(labels: np.ndarray, case: CaseGeometry, descriptor: Descriptor) -> np.ndarray:
    """A prediction on the prepared grid, [D, H, W] (or scores [K, D, H, W]), -> the original file's voxel order
    and shape (x, y, z) (or [K, x, y, z]); write it with ``case.affine``. In-plane nearest neighbour back to the
    canonical grid, then the slice transpose and the reorientation undone (exact)."""
    labels = np.asarray(labels)
    leading = labels.ndim - 3
    slice_axes = tuple(descriptor.slice_axes)
    transform = _transform(case.orientation, CANONICAL_ORIENTATION)
    canonical_shape = nib.orientations.apply_orientation(np.broadcast_to(np.uint8(0), case.shape), transform).shape
    plane = tuple(canonical_shape[axis] for axis in slice_axes)
    if labels.shape[leading:] != tuple(case.prepared_shape):
        raise ValueError(f"prediction of shape {labels.shape[leading:]}, the case was prepared as "
                         f"{tuple(case.prepared_shape)}")
    back = resample_inplane(labels, plane[1:], LABEL_ORDER)
    back = np.transpose(back, (*range(leading), *(leading + axis for axis in np.argsort(slice_axes))))
    back = np.moveaxis(back, range(leading), range(3, 3 + leading))  # orientation acts on the first three axes
    back = nib.orientations.apply_orientation(back, _transform(CANONICAL_ORIENTATION, case.orientation))
    return np.ascontiguousarray(np.moveaxis(back, range(3, 3 + leading), range(leading)))


def to_source_values(labels: np.ndarray, descriptor: Descriptor) -> np.ndarray:
    """Prepared class indices -> the label values of the user's files (``descriptor.label_values``: e.g. 0/255 of
    binary folder masks, or dataset.json's values when they were not consecutive)."""
    values = np.asarray(descriptor.label_values)
    return values.astype(np.uint8 if values.max() < 256 else np.int32)[np.asarray(labels)]


def image_to_original(label: np.ndarray, case: CaseGeometry) -> np.ndarray:
    """A 2-D prediction at the prepared size -> the original image's (H, W) (nearest neighbour)."""
    return resize_label(np.asarray(label, dtype=np.uint8), tuple(case.shape[:2]))

"""Checks of loaded arrays, shared by the readers, the preparations and prediction's inputs: each problem is a
:class:`~datasets.errors.DataError` naming the file it came from."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import DataError

__all__ = ["check_finite", "check_labels", "validate_pair"]


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

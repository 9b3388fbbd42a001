"""Training-time augmentation of 2-D slices, as in the TransUNet-family releases.

With probability 0.5: rot90 by k in {0,1,2,3} then a flip along axis 0 or 1; otherwise,
with probability 0.5 (0.25 overall): rotation by an integer angle in [-20, 20) degrees,
nearest-neighbour for image and label, same shape. Then resize to ``output_size``: image
cubic (order 3), label nearest (order 0). All randomness comes from the ``rng`` argument,
so an item is reproducible from (seed, epoch, index). No imgaug (broken on NumPy 2).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

ROT_FLIP_PROBABILITY = 0.5
ROTATE_PROBABILITY = 0.5  # of the remaining half
MAX_ROTATION_DEGREES = 20
IMAGE_ZOOM_ORDER = 3
LABEL_ZOOM_ORDER = 0


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the geometric augmentation: mode in {'none', 'rot_flip', 'rotate'}."""

    mode: str = "none"
    rot90_k: int = 0
    flip_axis: int = 0
    angle: int = 0


def sample_params(rng: np.random.Generator, max_angle: int = MAX_ROTATION_DEGREES) -> AugmentParams:
    """Draw the augmentation decision for one item."""
    if rng.random() > 1.0 - ROT_FLIP_PROBABILITY:
        return AugmentParams("rot_flip", rot90_k=int(rng.integers(0, 4)), flip_axis=int(rng.integers(0, 2)))
    if rng.random() > 1.0 - ROTATE_PROBABILITY:
        return AugmentParams("rotate", angle=int(rng.integers(-max_angle, max_angle)))
    return AugmentParams()


def apply_params(image: np.ndarray, label: np.ndarray, params: AugmentParams) -> tuple[np.ndarray, np.ndarray]:
    """Apply one geometric augmentation identically to image and label ([H,W] each)."""
    if params.mode == "rot_flip":
        image = np.flip(np.rot90(image, params.rot90_k), axis=params.flip_axis)
        label = np.flip(np.rot90(label, params.rot90_k), axis=params.flip_axis)
    elif params.mode == "rotate":
        image = ndimage.rotate(image, params.angle, order=0, reshape=False)
        label = ndimage.rotate(label, params.angle, order=0, reshape=False)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def resize_pair(
    image: np.ndarray, label: np.ndarray, output_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Resize a slice pair to ``output_size``: image cubic, label nearest."""
    height, width = image.shape
    if (height, width) == tuple(output_size):
        return image, label
    factors = (output_size[0] / height, output_size[1] / width)
    image = ndimage.zoom(image, factors, order=IMAGE_ZOOM_ORDER)
    label = ndimage.zoom(label, factors, order=LABEL_ZOOM_ORDER)
    return image, label


class RandomGenerator:
    """Callable ``(image [h,w], label [h,w], rng) -> (FloatTensor[1,H,W], LongTensor[H,W])``."""

    def __init__(self, output_size: tuple[int, int] | list[int]) -> None:
        if len(output_size) != 2:
            raise ValueError(f"output_size must be (H, W), got {output_size!r}")
        self.output_size = (int(output_size[0]), int(output_size[1]))

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = apply_params(image, label, sample_params(rng))
        image, label = resize_pair(image, label, self.output_size)
        image_t = torch.from_numpy(np.asarray(image, dtype=np.float32)).unsqueeze(0)
        label_t = torch.from_numpy(np.asarray(label, dtype=np.int64))
        return image_t, label_t

    def __repr__(self) -> str:
        return f"{type(self).__name__}(output_size={self.output_size})"

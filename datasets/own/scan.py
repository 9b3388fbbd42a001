"""One scan or picture -> what the model takes, exactly as the preparation made the training items: used for every
case of a preparation (:mod:`.cases`) and by prediction on a new scan (``predict.py``), so the two cannot drift."""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..rgb import resize_image
from .descriptor import CaseGeometry, ChannelIntensity, Descriptor
from .geometry import IMAGE_ORDER, prepare_geometry
from .intensity import normalize_channel

__all__ = ["normalized_volume", "prepare_scan", "prepare_picture"]


def normalized_volume(channels: Sequence[np.ndarray], affine: np.ndarray, intensities: Sequence[ChannelIntensity],
                      slice_axes: Sequence[int], target: Sequence[float], path: str | os.PathLike = ""
                      ) -> tuple[np.ndarray, dict]:
    """Channels (x, y, z) of one scan -> float32 [D, H, W] (one channel) or [D, C, H, W], normalised per channel,
    reoriented, resampled in-plane; and the case's geometry fields (:func:`.geometry.prepare_geometry`)."""
    if len(channels) != len(intensities):
        raise ValueError(f"{len(channels)} channel(s) given, the set has {len(intensities)}")
    normalized = [normalize_channel(data, intensity) for data, intensity in zip(channels, intensities)]
    stacked = normalized[0] if len(normalized) == 1 else np.stack(normalized, axis=-1)
    image, geometry = prepare_geometry(stacked, affine, slice_axes, target, IMAGE_ORDER, os.fspath(path))
    return image.astype(np.float32, copy=False), geometry


def prepare_scan(channels: Sequence[np.ndarray], affine: np.ndarray, descriptor: Descriptor,
                 path: str | os.PathLike = "") -> tuple[np.ndarray, CaseGeometry]:
    """A new scan's channels (x, y, z) with its RAS affine -> (the model's input [D, H, W] or [D, C, H, W], its
    geometry, for :func:`.geometry.to_original_grid`)."""
    image, geometry = normalized_volume(channels, affine, descriptor.intensity, descriptor.slice_axes,
                                        descriptor.target_spacing, path)
    return image, CaseGeometry(split="predict", source=os.fspath(path), **geometry)


def prepare_picture(image: np.ndarray, descriptor: Descriptor, path: str | os.PathLike = ""
                    ) -> tuple[np.ndarray, CaseGeometry]:
    """A picture uint8 [H, W, 3] -> (uint8 [S, S, 3] at the set's size, its geometry for
    :func:`.geometry.image_to_original`)."""
    size = tuple(descriptor.image_size)
    return resize_image(image, size), CaseGeometry(split="predict", shape=tuple(image.shape[:2]), prepared_shape=size,
                                                   source=os.fspath(path))

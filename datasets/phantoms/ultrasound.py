"""Breast-ultrasound-like phantom images, shared by the BUSI and BUS phantoms.

Grey speckled tissue with horizontal layering, one dark (hypoechoic) irregular lesion with a bright rim above and
an acoustic shadow below; label 1 = lesion. The grey image is returned as 3 equal RGB channels.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .shapes import unit_grid, wobbly_ellipse

TISSUE_RANGE = (90.0, 140.0)
LESION_RANGE = (15.0, 45.0)
SPECKLE_SIGMA = 0.35  # multiplicative speckle
SHADOW_STRENGTH = 0.35
LESION_RADIUS_RANGE = (0.2, 0.45)


def ultrasound_lesion_image(rng: np.random.Generator, height: int, width: int, lesion: bool = True
                            ) -> tuple[np.ndarray, np.ndarray]:
    """An ultrasound-like image (uint8 [H,W,3], 3 equal channels) and its lesion label (uint8 0/1)."""
    y, x = unit_grid(height, width)
    tissue = rng.uniform(*TISSUE_RANGE)
    layers = 1.0 + 0.2 * np.sin(y * rng.uniform(4.0, 8.0) + rng.uniform(0, 2 * math.pi))
    image = np.broadcast_to(tissue * layers * (1.0 - 0.25 * (y + 1.0) / 2.0), (height, width)).copy()
    label = np.zeros((height, width), np.uint8)
    if lesion:
        center = (rng.uniform(-0.3, 0.2), rng.uniform(-0.3, 0.3))
        radii = (rng.uniform(*LESION_RADIUS_RANGE) * 0.7, rng.uniform(*LESION_RADIUS_RANGE))
        wobble = [(k, rng.uniform(0.03, 0.1), rng.uniform(0, 2 * math.pi)) for k in (3, 5)]
        radius = wobbly_ellipse(y, x, center, radii, rng.uniform(-0.3, 0.3), wobble)
        label = (radius < 1.0).astype(np.uint8)
        below = (y > center[0]) & (np.abs(x - center[1]) < radii[1] * 0.8)
        image = image * np.where(below & ~label.astype(bool), 1.0 - SHADOW_STRENGTH, 1.0)
        rim = (radius >= 1.0) & (radius < 1.15) & (y < center[0])
        image = np.where(rim, image * 1.3, image)
        alpha = ndimage.gaussian_filter(label.astype(np.float64), 0.8)
        image = (1.0 - alpha) * image + alpha * rng.uniform(*LESION_RANGE)
    speckle = rng.rayleigh(1.0, size=(height, width)) / math.sqrt(math.pi / 2.0)
    image = image * (1.0 + SPECKLE_SIGMA * (ndimage.gaussian_filter(speckle, 0.6) - 1.0))
    grey = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2), label

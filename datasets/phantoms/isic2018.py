"""ISIC-2018-like dermoscopy phantom (``python -m datasets.phantoms --dataset isic2018 [--official]``).

Warm skin with shading and vignetting, one darker irregular lesion (darker core, soft edge), dark hairs crossing
it; label 1 = lesion. Written in the prepared format, or with ``--official`` as a fake official download (the input
of ``datasets.prepare.isic2018``).
"""
from __future__ import annotations

import math
import os

import numpy as np
from scipy import ndimage

from ..io.images import save_image_file
from ..io.lists import write_list
from ..isic2018 import ISIC2018_IMAGE_DIR, ISIC2018_IMAGE_SUFFIX, ISIC2018_MASK_DIR, ISIC2018_MASK_SUFFIX
from .shapes import RGB_GRID, check_counts, finish_rgb, smooth_noise, unit_grid, wobbly_ellipse, write_rgb_phantom

# Colours are RGB in 0..255. Skin: light, warm; lesion: darker brown with a darker pigment core.
SKIN_RGB_RANGE = ((195.0, 235.0), (145.0, 185.0), (115.0, 155.0))
LESION_RGB_RANGE = ((95.0, 150.0), (50.0, 95.0), (35.0, 75.0))
LESION_CENTER_SHIFT = 0.25  # of the half-size, from the image centre
LESION_RADIUS_RANGE = (0.3, 0.55)
LESION_WOBBLE_ORDERS = (2, 3, 5)
LESION_WOBBLE_AMPLITUDE = 0.12
LESION_CORE_DARKENING = 0.35
SKIN_SHADING = 12.0
HAIR_COUNT_MAX = 2
HAIR_RGB = (45.0, 30.0, 25.0)
HAIR_HALF_WIDTH = 0.012  # of the image size
VIGNETTE_STRENGTH = 0.35


def isic_lesion_image(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A dermoscopy-like image (uint8 [H,W,3]) and its lesion label (uint8 0/1).

    Skin with smooth shading and vignetting, one darker irregular lesion with a darker core
    and a soft edge, and up to two dark hairs crossing it (background in the label).
    """
    y, x = unit_grid(height, width)
    shape = (height, width)
    skin = np.array([rng.uniform(*r) for r in SKIN_RGB_RANGE])
    image = skin + SKIN_SHADING * smooth_noise(rng, shape, RGB_GRID)[..., None]

    center = tuple(rng.uniform(-LESION_CENTER_SHIFT, LESION_CENTER_SHIFT, size=2))
    radii = tuple(rng.uniform(*LESION_RADIUS_RANGE, size=2))
    wobble = [(k, rng.uniform(0.3, 1.0) * LESION_WOBBLE_AMPLITUDE, rng.uniform(0, 2 * math.pi))
              for k in LESION_WOBBLE_ORDERS]
    radius = wobbly_ellipse(y, x, center, radii, rng.uniform(0, math.pi), wobble)
    label = (radius < 1.0).astype(np.uint8)

    lesion = np.array([rng.uniform(*r) for r in LESION_RGB_RANGE])
    core = np.clip(1.0 - radius, 0.0, 1.0)[..., None]  # 1 at the centre, 0 at the border
    lesion_colour = lesion * (1.0 - LESION_CORE_DARKENING * core) + 8.0 * smooth_noise(rng, shape, RGB_GRID)[..., None]
    alpha = ndimage.gaussian_filter(label.astype(np.float64), 1.0)[..., None]  # soft edge
    image = (1.0 - alpha) * image + alpha * lesion_colour

    for _ in range(int(rng.integers(0, HAIR_COUNT_MAX + 1))):
        theta, offset = rng.uniform(0, math.pi), rng.uniform(-0.6, 0.6)
        distance = np.abs(math.cos(theta) * y - math.sin(theta) * x - offset)
        half_width = max(HAIR_HALF_WIDTH, 1.0 / min(shape))  # at least one pixel wide
        image[np.broadcast_to(distance < half_width, shape)] = HAIR_RGB

    vignette = 1.0 - VIGNETTE_STRENGTH * np.clip(np.sqrt(y**2 + x**2) - 1.0, 0.0, 1.0)
    return finish_rgb(rng, image * vignette[..., None]), label


# ----------------------------------------------------------------------------- writers
def isic_phantom_name(index: int) -> str:
    """``ISIC_0000003`` style name, as the official images."""
    return f"ISIC_{index:07d}"


def write_isic2018_phantom(data_root: str | os.PathLike, list_dir: str | os.PathLike, num_train: int = 6,
                           num_val: int = 2, num_test: int = 2, size: int = 64, seed: int = 0) -> dict:
    """Write a synthetic prepared ISIC-2018 set: ``data_root/ISIC_xxxxxxx.npz`` and the list files.

    Image i (``size`` square) is drawn from ``default_rng([seed, i])``; the first ``num_train`` images train, then
    val, test.
    """
    def make_items(index: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
        return [(isic_phantom_name(index), *isic_lesion_image(np.random.default_rng([seed, index]), size, size))]

    return write_rgb_phantom(data_root, list_dir, (num_train, num_val, num_test), make_items, size=size)


JPEG_QUALITY = 95  # of the fake download's images


def write_isic2018_download(src: str | os.PathLike, num_images: int = 10, height: int = 48, width: int = 64,
                            seed: int = 0) -> list[str]:
    """Write a fake ISIC-2018 Task 1 training download (jpg images, 0/255 png masks, a LICENSE file)."""
    check_counts(num_images=num_images, height=height, width=width)
    src = os.fspath(src)
    image_dir, mask_dir = os.path.join(src, ISIC2018_IMAGE_DIR), os.path.join(src, ISIC2018_MASK_DIR)
    names = []
    for index in range(num_images):
        name = isic_phantom_name(index)
        image, label = isic_lesion_image(np.random.default_rng([seed, index]), height, width)
        save_image_file(os.path.join(image_dir, name + ISIC2018_IMAGE_SUFFIX), image, quality=JPEG_QUALITY)
        save_image_file(os.path.join(mask_dir, name + ISIC2018_MASK_SUFFIX), (label * 255).astype(np.uint8))
        names.append(name)
    write_list(os.path.join(image_dir, "LICENSE.txt"), ["synthetic phantom images, no licence needed"])
    return names

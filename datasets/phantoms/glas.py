"""GlaS-like H&E histology phantom (``python -m datasets.phantoms --dataset glas [--official]``).

Pink stroma with texture, a few glands: each a pale lumen inside a purple epithelial ring dotted with dark nuclei;
the label is the gland (ring + lumen), 1. Written in the prepared format, or with ``--official`` as a fake official
Warwick-QU download (``train_<n>.bmp`` / ``testA_<n>.bmp`` / ``testB_<n>.bmp`` with ``_anno.bmp`` instance maps
and ``Grade.csv``; the input of ``datasets.prepare.glas``).
"""
from __future__ import annotations

import math
import os

import numpy as np

from ..glas import GLAS_ANNO_MARK, GLAS_GRADE_CSV, GLAS_IMAGE_SUFFIX, GLAS_TEST_PREFIXES, GLAS_TRAIN_PREFIX
from ..io.images import save_image_file
from ..io.lists import write_list
from .shapes import RGB_GRID, check_counts, finish_rgb, smooth_noise, unit_grid, wobbly_ellipse, write_rgb_phantom

STROMA_RGB = (235.0, 175.0, 205.0)
EPITHELIUM_RGB = (150.0, 80.0, 160.0)
LUMEN_RGB = (245.0, 235.0, 245.0)
NUCLEUS_RGB = (70.0, 30.0, 110.0)
GLAND_COUNT_RANGE = (1, 4)  # inclusive
GLAND_RADIUS_RANGE = (0.18, 0.35)
LUMEN_FRACTION = 0.55
NUCLEUS_DENSITY = 0.25


def gland_image(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An H&E-like image (uint8 [H,W,3]) and its gland instance map (uint8: 0 background, 1..k glands)."""
    y, x = unit_grid(height, width)
    shape = (height, width)
    image = np.array(STROMA_RGB) + 15.0 * smooth_noise(rng, shape, RGB_GRID)[..., None]
    instances = np.zeros(shape, np.uint8)
    for _ in range(int(rng.integers(GLAND_COUNT_RANGE[0], GLAND_COUNT_RANGE[1] + 1))):
        center = tuple(rng.uniform(-0.65, 0.65, size=2))
        radii = tuple(rng.uniform(*GLAND_RADIUS_RANGE, size=2))
        wobble = [(k, rng.uniform(0.03, 0.1), rng.uniform(0, 2 * math.pi)) for k in (3, 4)]
        radius = wobbly_ellipse(y, x, center, radii, rng.uniform(0, math.pi), wobble)
        gland = (radius < 1.0) & (instances == 0)  # the first gland keeps overlapping pixels
        if not gland.any():
            continue
        instances[gland] = instances.max() + 1
        ring = gland & (radius >= LUMEN_FRACTION)
        nuclei = ring & (rng.random(shape) < NUCLEUS_DENSITY)
        image[ring] = EPITHELIUM_RGB
        image[nuclei] = NUCLEUS_RGB
        image[gland & ~ring] = LUMEN_RGB
    return finish_rgb(rng, image), instances


# ----------------------------------------------------------------------------- writers
def write_glas_phantom(data_root: str | os.PathLike, list_dir: str | os.PathLike, num_train: int = 6,
                       num_val: int = 2, num_test: int = 2, size: int = 64, seed: int = 0) -> dict:
    """Write a synthetic prepared GlaS set (``train_<i>`` then ``testA_<i>`` items) and its lists; image i is drawn
    from ``default_rng([seed, i])``; the first ``num_train`` train, then val, test."""
    def make_items(index: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
        prefix = GLAS_TRAIN_PREFIX if index < num_train + num_val else GLAS_TEST_PREFIXES[0]
        image, instances = gland_image(np.random.default_rng([seed, index]), size, size)
        return [(f"{prefix}_{index + 1}", image, (instances > 0).astype(np.uint8))]

    return write_rgb_phantom(data_root, list_dir, (num_train, num_val, num_test), make_items, size=size)


def write_glas_download(src: str | os.PathLike, num_train: int = 10, num_test_a: int = 3, num_test_b: int = 2,
                        height: int = 40, width: int = 48, seed: int = 0) -> dict[str, list[str]]:
    """Write a fake Warwick-QU download in ``src``: ``<prefix>_<n>.bmp`` + ``<prefix>_<n>_anno.bmp`` (instance
    maps) for train, testA and testB, and ``Grade.csv``. Returns {prefix: names}."""
    check_counts(num_train=num_train, num_test_a=num_test_a, num_test_b=num_test_b, height=height, width=width)
    src = os.fspath(src)
    counts = dict(zip((GLAS_TRAIN_PREFIX, *GLAS_TEST_PREFIXES), (num_train, num_test_a, num_test_b)))
    written: dict[str, list[str]] = {}
    rows = ["name, patient ID, GlaS, grade (Sirinukunwattana et al. 2015)"]
    for prefix_index, (prefix, count) in enumerate(counts.items()):
        written[prefix] = []
        for n in range(1, count + 1):
            name = f"{prefix}_{n}"
            image, instances = gland_image(np.random.default_rng([seed, prefix_index, n]), height, width)
            save_image_file(os.path.join(src, name + GLAS_IMAGE_SUFFIX), image)
            save_image_file(os.path.join(src, name + GLAS_ANNO_MARK + GLAS_IMAGE_SUFFIX), instances)
            rows.append(f"{name},{n},{'benign' if n % 2 else 'malignant'},{'adenomatous' if n % 2 else 'healthy'}")
            written[prefix].append(name)
    write_list(os.path.join(src, GLAS_GRADE_CSV), rows)
    return written

"""SegPC-2021-like microscopy phantom (``python -m datasets.phantoms --dataset segpc2021 [--official]``).

Light stained background, pink red blood cells (unlabelled) and plasma cells with light purple cytoplasm (1) and
an eccentric dark nucleus (2), itemised by the preparation's own code (one crop per cell by default). Written in
the prepared format, or with ``--official`` as a fake official download (the input of ``datasets.prepare.segpc2021``).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from ..io.images import save_image_file
from ..prepare.segpc2021 import instance_class_map, segpc_items
from ..segpc2021 import (
    MASK_CYTOPLASM_VALUE, MASK_NUCLEUS_VALUE, SEGPC2021_IMAGE_DIR, SEGPC2021_MASK_DIR, SEGPC2021_SUFFIX,
)
from .shapes import RGB_GRID, check_counts, finish_rgb, smooth_noise, unit_grid, wobbly_ellipse, write_rgb_phantom

SEGPC_NUM_CELLS = 3  # plasma cells per synthetic field

# ----------------------------------------------------------------------------- microscopy field
# Jenner-Giemsa-like stain: light background, pink red blood cells (unlabelled), plasma cells
# with light purple-blue cytoplasm and an eccentric dark purple nucleus.
FIELD_RGB_RANGE = ((222.0, 240.0), (212.0, 230.0), (222.0, 240.0))
RBC_RGB = (225.0, 165.0, 178.0)
CYTOPLASM_RGB_RANGE = ((150.0, 185.0), (130.0, 165.0), (190.0, 220.0))
NUCLEUS_RGB_RANGE = ((70.0, 105.0), (30.0, 60.0), (105.0, 145.0))
CELL_RADIUS_RANGE = (0.17, 0.24)  # of the half of the shorter side
NUCLEUS_SCALE_RANGE = (0.45, 0.6)  # nucleus radius / cell radius
NUCLEUS_OFFSET_MAX = 0.3  # nucleus centre shift / cell radius (eccentric nucleus)
CELL_WOBBLE = 0.06
RBC_COUNT = 3
RBC_RADIUS = 0.12
CELL_PLACEMENT_TRIES = 200


def place_cells(rng: np.random.Generator, count: int, aspect: float) -> list[tuple[tuple[float, float], float]]:
    """(centre (y, x), radius) of ``count`` cells inside the field, overlapping little where possible."""
    cells: list[tuple[tuple[float, float], float]] = []
    for _ in range(count):
        for _ in range(CELL_PLACEMENT_TRIES):
            radius = rng.uniform(*CELL_RADIUS_RANGE)
            center = (rng.uniform(-1 + radius, 1 - radius), rng.uniform(-aspect + radius, aspect - radius))
            if all(math.dist(center, c) > 0.9 * (radius + r) for c, r in cells):
                break
        cells.append((center, radius))
    return cells


def segpc_field(
    rng: np.random.Generator, height: int, width: int, num_cells: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """A stained bone-marrow field (uint8 [H,W,3]) and one mask per plasma cell in the official
    coding (uint8 [H,W]: 0 background, 20 cytoplasm, 40 nucleus)."""
    y, x = unit_grid(height, width)
    shape = (height, width)
    image = np.array([rng.uniform(*r) for r in FIELD_RGB_RANGE]) + 5.0 * smooth_noise(rng, shape, RGB_GRID)[..., None]
    aspect = width / height if width >= height else 1.0
    for _ in range(RBC_COUNT):  # confounders: round pink cells without nucleus
        center = (rng.uniform(-0.9, 0.9), rng.uniform(-aspect * 0.9, aspect * 0.9))
        image[wobbly_ellipse(y, x, center, (RBC_RADIUS, RBC_RADIUS), 0.0) < 1.0] = RBC_RGB

    masks = []
    for center, radius in place_cells(rng, num_cells, aspect):
        wobble = [(k, rng.uniform(0, CELL_WOBBLE), rng.uniform(0, 2 * math.pi)) for k in (2, 3)]
        cell = wobbly_ellipse(y, x, center, (radius, radius * rng.uniform(0.85, 1.15)), rng.uniform(0, math.pi),
                              wobble) < 1.0
        shift = rng.uniform(0, NUCLEUS_OFFSET_MAX * radius)
        direction = rng.uniform(0, 2 * math.pi)
        nucleus_center = (center[0] + shift * math.sin(direction), center[1] + shift * math.cos(direction))
        nucleus_radius = radius * rng.uniform(*NUCLEUS_SCALE_RANGE)
        nucleus = cell & (wobbly_ellipse(y, x, nucleus_center, (nucleus_radius, nucleus_radius * 0.85),
                                         rng.uniform(0, math.pi)) < 1.0)
        image[cell] = [rng.uniform(*r) for r in CYTOPLASM_RGB_RANGE]
        image[nucleus] = [rng.uniform(*r) for r in NUCLEUS_RGB_RANGE]
        mask = np.zeros(shape, dtype=np.uint8)
        mask[cell] = MASK_CYTOPLASM_VALUE
        mask[nucleus] = MASK_NUCLEUS_VALUE
        masks.append(mask)
    return finish_rgb(rng, image), masks


# ----------------------------------------------------------------------------- writers
def segpc_phantom_name(index: int) -> str:
    """Image name of synthetic field ``index`` (the official names are numbers too)."""
    return str(100 + index)


def segpc_instance_class_maps(name: str, masks: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Instance masks in the official coding -> {instance id '1', '2', ...: class map}."""
    return {str(n): instance_class_map(mask, f"{name}_{n}") for n, mask in enumerate(masks, start=1)}


def write_segpc2021_phantom(data_root: str | os.PathLike, list_dir: str | os.PathLike, num_train: int = 3,
                            num_val: int = 1, num_test: int = 1, size: int = 64, field_size: int = 128,
                            num_cells: int = SEGPC_NUM_CELLS, mode: str = "crop", seed: int = 0) -> dict:
    """Write a synthetic prepared SegPC-2021 set: items of ``num_*`` fields per split and the list files.

    Each field (``field_size`` square, ``num_cells`` plasma cells, from ``default_rng([seed, i])``)
    goes through the preparation's own itemisation: one ``size`` crop per cell (``mode='crop'``)
    or the resized field (``mode='image'``).
    """
    def make_items(index: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
        name = segpc_phantom_name(index)
        image, masks = segpc_field(np.random.default_rng([seed, index]), field_size, field_size, num_cells)
        return segpc_items(name, image, segpc_instance_class_maps(name, masks), mode, size)

    return write_rgb_phantom(data_root, list_dir, (num_train, num_val, num_test), make_items, size=size,
                             field_size=field_size, num_cells=num_cells)


def write_segpc2021_download(src: str | os.PathLike, num_train: int = 4, num_validation: int = 2, num_test: int = 1,
                             height: int = 96, width: int = 128, num_cells: int = SEGPC_NUM_CELLS,
                             seed: int = 0) -> dict[str, list[str]]:
    """Write a fake SegPC-2021 download: ``TCIA_SegPC_dataset/{train,validation}/{x,y}`` (bmp fields,
    one bmp mask per cell, 20 cytoplasm / 40 nucleus) and a label-less ``test/x``.
    Returns the image names per subset."""
    check_counts(num_train=num_train, height=height, width=width, num_cells=num_cells)  # validation/test may be 0
    root = os.path.join(os.fspath(src), "TCIA_SegPC_dataset")
    counts = {"train": num_train, "validation": num_validation, "test": num_test}
    names: dict[str, list[str]] = {subset: [] for subset in counts}
    index = 0
    for subset, count in counts.items():
        for _ in range(count):
            name = segpc_phantom_name(index)
            image, masks = segpc_field(np.random.default_rng([seed, index]), height, width, num_cells)
            save_image_file(os.path.join(root, subset, SEGPC2021_IMAGE_DIR, name + SEGPC2021_SUFFIX), image)
            if subset != "test":  # the official test images come without masks
                for n, mask in enumerate(masks, start=1):
                    mask_name = f"{name}_{n}{SEGPC2021_SUFFIX}"
                    save_image_file(os.path.join(root, subset, SEGPC2021_MASK_DIR, mask_name), mask)
            names[subset].append(name)
            index += 1
    return names

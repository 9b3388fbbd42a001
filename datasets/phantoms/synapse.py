"""Synapse-like CT phantom (``python -m datasets.phantoms --dataset synapse``).

A body outline with fat rim, muscle wall, spine, IVC and bowel loops (background) and the 8 TransUNet organs as
deformed ellipsoids, a tube (aorta) and a curved tapering tube (pancreas). Intensities are class-typical but
overlap (both kidneys share one; liver/spleen/pancreas/muscle are close), plus smooth texture, blur and noise, so
position and context matter. Pose, size and position vary per case.
"""
from __future__ import annotations

import os
from dataclasses import replace

import numpy as np

from ..io.lists import write_list
from .shapes import (
    INTENSITY_JITTER, Blob, Coords, CurvedTube, Tube, body_masks, case_coordinates, check_counts, finish_image, paint,
    phantom_case_numbers,
)
from ..synapse import (
    SYNAPSE_TEST_CASES, SYNAPSE_TRAIN_CASES, TEST_DIR_NAME, TEST_SPLIT, TRAIN_DIR_NAME, TRAIN_SPLIT, synapse_case_name,
    write_synapse_test_case, write_synapse_train_case,
)

SYNAPSE_DEFAULTS = dict(num_train=6, num_test=3, size=128, depth=24)
CT_NOISE_SIGMA = 0.03


# ----------------------------------------------------------------------------- anatomy
# Image axes: x to the right (= patient left), y downwards (= posterior); z in [0, 1] head->feet.
# Labels follow TransUNet: 1 aorta, 2 gallbladder, 3 kidney_left, 4 kidney_right, 5 liver,
# 6 pancreas, 7 spleen, 8 stomach; 0 for background structures.
CT_AIR, CT_FAT, CT_SOFT_TISSUE, CT_MUSCLE, CT_BONE = 0.0, 0.12, 0.33, 0.42, 0.92
BODY_RADII = (0.88, 0.64)
BODY_CENTER_Y = 0.04
FAT_RIM = 0.07
MUSCLE_RIM = 0.05
BOWEL_LOOPS = 6
BOWEL_INTENSITY_RANGE = (0.25, 0.55)

SYNAPSE_BACKGROUND = (
    Blob(0, (0.0, 0.50, 0.5), (0.12, 0.12, 9.0), CT_BONE),  # vertebral body (z-infinite)
    Blob(0, (0.0, 0.66, 0.5), (0.05, 0.08, 9.0), CT_BONE),  # spinous process
)
SYNAPSE_ORGANS = (  # painting order: later structures win where they overlap
    Blob(5, (-0.38, -0.02, 0.30), (0.42, 0.40, 0.50), 0.52, angle=0.2),  # liver
    Blob(7, (0.52, 0.22, 0.30), (0.15, 0.22, 0.22), 0.58, angle=-0.5),  # spleen
    Blob(8, (0.28, -0.24, 0.30), (0.30, 0.20, 0.26), 0.36, angle=0.3),  # stomach
    Tube(0, (-0.14, 0.25), 0.08, 0.62),  # inferior vena cava (background)
    Blob(4, (-0.40, 0.36, 0.72), (0.13, 0.18, 0.24), 0.72, angle=0.45),  # kidney_right
    Blob(3, (0.40, 0.34, 0.68), (0.13, 0.18, 0.24), 0.72, angle=-0.45),  # kidney_left
    Blob(2, (-0.24, -0.22, 0.55), (0.12, 0.15, 0.16), 0.20),  # gallbladder
    CurvedTube(6, ((-0.12, 0.08), (0.12, 0.0), (0.42, 0.08)), (0.12, 0.09), 0.55, 0.15, 0.45),  # pancreas
    Tube(1, (0.06, 0.30), 0.095, 0.85),  # aorta
)
STOMACH_LABEL = 8
STOMACH_WALL = 0.035
STOMACH_WALL_INTENSITY = 0.5
STOMACH_CONTENT_INTENSITY = 0.30
STOMACH_GAS_PROBABILITY = 0.5
KIDNEY_LABELS = (3, 4)
KIDNEY_MEDULLA_SCALE = 0.5
KIDNEY_MEDULLA_INTENSITY = 0.55


def bowel_loops(rng: np.random.Generator, count: int) -> list[Blob]:
    """Random small background blobs in the lower anterior abdomen (confounders)."""
    loops = []
    for _ in range(count):
        center = (rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.1), rng.uniform(0.55, 1.0))
        radius = rng.uniform(0.06, 0.1)
        loops.append(Blob(0, center, (radius, radius * rng.uniform(0.7, 1.3), radius * 2.0),
                          rng.uniform(*BOWEL_INTENSITY_RANGE)))
    return loops


def synapse_case(rng: np.random.Generator, size: int, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """One CT-like abdomen: image float32 [D,S,S] in [0,1], label uint8 with 8 organ classes."""
    coords = case_coordinates(rng, depth, size)
    shape = (depth, size, size)
    image = np.full(shape, CT_AIR, dtype=np.float64)
    label = np.zeros(shape, dtype=np.uint8)
    offset = rng.uniform(-INTENSITY_JITTER, INTENSITY_JITTER)  # contrast-phase variation

    body, inner, core = body_masks(coords, BODY_RADII, BODY_CENTER_Y, (FAT_RIM, MUSCLE_RIM))
    paint(image, label, body, CT_FAT, 0)
    paint(image, label, inner, CT_MUSCLE, 0)
    paint(image, label, core, CT_SOFT_TISSUE, 0)
    for structure in (*bowel_loops(rng, BOWEL_LOOPS), *SYNAPSE_BACKGROUND):
        paint(image, label, structure.mask(coords) & core, structure.intensity, 0)

    for template in SYNAPSE_ORGANS:
        organ = template.jittered(rng)
        mask = organ.mask(coords) & core
        paint(image, label, mask, organ.intensity + offset, organ.label)
        if organ.label == STOMACH_LABEL:
            paint_stomach_interior(rng, image, coords, organ, mask)
        elif organ.label in KIDNEY_LABELS:
            medulla = replace(organ, radii=tuple(r * KIDNEY_MEDULLA_SCALE for r in organ.radii))
            image[medulla.mask(coords) & mask] = KIDNEY_MEDULLA_INTENSITY + offset

    image = finish_image(rng, image, CT_NOISE_SIGMA)
    return np.clip(image, 0.0, 1.0).astype(np.float32), label


def paint_stomach_interior(
    rng: np.random.Generator, image: np.ndarray, coords: Coords, stomach: Blob, mask: np.ndarray
) -> None:
    """Bright wall, darker content and (sometimes) an anterior gas pocket; all labelled stomach."""
    shrunk = replace(stomach, radii=tuple(r - STOMACH_WALL for r in stomach.radii))
    content = shrunk.mask(coords) & mask
    image[mask & ~content] = STOMACH_WALL_INTENSITY
    image[content] = STOMACH_CONTENT_INTENSITY
    if rng.random() < STOMACH_GAS_PROBABILITY:
        gas_level = stomach.center[1] - 0.5 * stomach.radii[1]
        image[content & (coords[1] < gas_level)] = CT_AIR


# ----------------------------------------------------------------------------- writer
def write_synapse_phantom(
    data_root: str | os.PathLike,
    list_dir: str | os.PathLike,
    num_train: int = SYNAPSE_DEFAULTS["num_train"],
    num_test: int = SYNAPSE_DEFAULTS["num_test"],
    size: int = SYNAPSE_DEFAULTS["size"],
    depth: int = SYNAPSE_DEFAULTS["depth"],
    seed: int = 0
) -> dict:
    """Write a synthetic Synapse set: ``data_root/{train_npz,test_vol_h5}`` and the list files.

    Case numbers follow the TransUNet split (train case0005..., test case0001...).
    Returns the paths to pass to build_dataset, the case names and the list entries per split.
    """
    check_counts(num_train=num_train, num_test=num_test, size=size, depth=depth)
    data_root, list_dir = os.fspath(data_root), os.fspath(list_dir)
    train_dir, test_dir = os.path.join(data_root, TRAIN_DIR_NAME), os.path.join(data_root, TEST_DIR_NAME)
    test_numbers = phantom_case_numbers(SYNAPSE_TEST_CASES, num_test, set(SYNAPSE_TRAIN_CASES))
    train_numbers = phantom_case_numbers(SYNAPSE_TRAIN_CASES, num_train, set(test_numbers))

    train_entries, test_entries = [], []
    for number in train_numbers:
        image, label = synapse_case(np.random.default_rng([seed, number]), size, depth)
        train_entries += write_synapse_train_case(train_dir, synapse_case_name(number), image, label)
    for number in test_numbers:
        image, label = synapse_case(np.random.default_rng([seed, number]), size, depth)
        test_entries.append(write_synapse_test_case(test_dir, synapse_case_name(number), image, label))
    write_list(os.path.join(list_dir, f"{TRAIN_SPLIT}.txt"), train_entries)
    write_list(os.path.join(list_dir, f"{TEST_SPLIT}.txt"), test_entries)
    return dict(root_path=train_dir, volume_path=test_dir, list_dir=list_dir,
                train_cases=[synapse_case_name(n) for n in train_numbers], test_cases=test_entries,
                num_train_slices=len(train_entries), entries={TRAIN_SPLIT: train_entries, TEST_SPLIT: test_entries})

"""ACDC-like cine MRI phantom (``python -m datasets.phantoms --dataset acdc``).

Short axis: torso, lungs, spine, descending aorta, liver, pericardial fat, and the heart: LV blood pool with
papillary muscles, myocardium ring with apical cap, RV crescent that fades towards the apex. Each patient has ED
and ES volumes (smaller LV cavity, thicker wall at ES); intensities are min-max normalised per volume like the
preparation of the real data.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..acdc import ACDC_SPLITS, acdc_case_name, acdc_entry_case_name, minmax_normalize, write_acdc_case
from ..io.lists import write_list
from .shapes import (
    TEXTURE_GRID, Blob, Coords, Shape, Tube, body_masks, case_coordinates, check_counts, finish_image, paint,
    smooth_noise,
)

ACDC_DEFAULTS = dict(num_train=5, num_valid=1, num_test=2, size=128, depth=10)
MR_NOISE_SIGMA = 0.03
MR_BIAS_AMPLITUDE = 0.12


# ----------------------------------------------------------------------------- anatomy
# Labels: 1 RV, 2 Myo, 3 LV. z runs from the base (0) to the apex (1).
MR_AIR, MR_FAT, MR_MUSCLE, MR_TISSUE, MR_LUNG = 0.02, 0.85, 0.28, 0.35, 0.07
MR_LV_BLOOD, MR_RV_BLOOD, MR_MYO, MR_PAPILLARY = 0.78, 0.70, 0.28, 0.3
RV_LABEL, MYO_LABEL, LV_LABEL = 1, 2, 3
TORSO_RADII = (0.9, 0.62)
TORSO_FAT_RIM = 0.06
TORSO_MUSCLE_RIM = 0.04
ACDC_BACKGROUND = (
    Blob(0, (-0.52, 0.02, 0.5), (0.30, 0.44, 9.0), MR_LUNG),  # right lung
    Blob(0, (0.50, 0.05, 0.5), (0.28, 0.42, 9.0), MR_LUNG),  # left lung
    Blob(0, (0.0, 0.47, 0.5), (0.10, 0.10, 9.0), 0.45),  # vertebra
    Blob(0, (-0.45, 0.2, 1.15), (0.38, 0.30, 0.5), 0.32),  # liver dome in apical slices
    Tube(0, (0.14, 0.33), 0.07, 0.72),  # descending aorta
)
HEART_CENTER = (0.08, -0.06)
HEART_DRIFT = (0.06, 0.04)  # centre shift from base to apex
LV_CAVITY = {"ED": 0.26, "ES": 0.18}  # cavity radius at the base
MYO_THICKNESS = {"ED": 0.09, "ES": 0.12}
LV_CAVITY_LENGTH = 0.95  # the cavity closes just before the last slice ...
LV_WALL_LENGTH = 1.12  # ... while the myocardium caps the apex
RV_SCALE = {"ED": 1.0, "ES": 0.75}
RV_RADII = (0.36, 0.20)  # along the septum, away from it
RV_LENGTH = 0.8
RV_DIRECTION = math.pi + 0.35  # from LV towards RV: image left and anterior
RV_WALL_GAP = 0.025
PAPILLARY_RADIUS = 0.04
PERICARDIAL_FAT_BLOBS = 3


@dataclass(frozen=True)
class HeartPose:
    """Per-patient heart geometry shared by the ED and ES volumes."""

    center: tuple[float, float]
    drift: tuple[float, float]
    scale: float
    eccentricity: float
    angle: float
    rv_direction: float
    papillary_angles: tuple[float, float]
    fat_angles: tuple[float, ...]

    @classmethod
    def sample(cls, rng: np.random.Generator) -> HeartPose:
        return cls(
            center=tuple(c + rng.uniform(-0.06, 0.06) for c in HEART_CENTER),
            drift=tuple(d + rng.uniform(-0.04, 0.04) for d in HEART_DRIFT),
            scale=rng.uniform(0.85, 1.15),
            eccentricity=rng.uniform(0.88, 1.12),
            angle=rng.uniform(0, math.pi),
            rv_direction=RV_DIRECTION + rng.uniform(-0.3, 0.3),
            papillary_angles=(rng.uniform(0.3, 1.2), rng.uniform(-1.2, -0.3)),
            fat_angles=tuple(rng.uniform(0, 2 * math.pi, size=PERICARDIAL_FAT_BLOBS)),
        )


def heart_masks(coords: Coords, pose: HeartPose, phase: str) -> dict[str, np.ndarray]:
    """Boolean masks of the LV cavity, myocardium, RV and papillary muscles for one phase."""
    z, y, x = coords
    cx = pose.center[0] + pose.drift[0] * z
    cy = pose.center[1] + pose.drift[1] * z
    cos, sin = math.cos(pose.angle), math.sin(pose.angle)
    # elliptic in-plane radius (eccentricity along ``angle``) around the moving centre
    lx = (cos * (x - cx) + sin * (y - cy)) * pose.eccentricity
    ly = (-sin * (x - cx) + cos * (y - cy)) / pose.eccentricity
    radius = np.sqrt(lx**2 + ly**2)

    def profile(length: float) -> np.ndarray:
        return np.sqrt(np.clip(1.0 - (z / length) ** 2, 0.0, None))

    cavity_r = pose.scale * LV_CAVITY[phase] * profile(LV_CAVITY_LENGTH)
    outer_r = pose.scale * (LV_CAVITY[phase] + MYO_THICKNESS[phase]) * profile(LV_WALL_LENGTH)
    cavity = radius < cavity_r
    wall = (radius < outer_r) & ~cavity

    rv_scale = pose.scale * RV_SCALE[phase] * profile(RV_LENGTH)
    ux, uy = math.cos(pose.rv_direction), math.sin(pose.rv_direction)
    rx, ry = x - (cx + ux * outer_r), y - (cy + uy * outer_r)
    along, away = -uy * rx + ux * ry, ux * rx + uy * ry
    with np.errstate(divide="ignore", invalid="ignore"):
        rv_ellipse = (along / (RV_RADII[0] * rv_scale)) ** 2 + (away / (RV_RADII[1] * rv_scale)) ** 2 < 1.0
    rv = rv_ellipse & (rv_scale > 0) & (radius > outer_r + RV_WALL_GAP)

    papillary = np.zeros_like(cavity)
    for theta in pose.papillary_angles:
        px = cx + 0.6 * cavity_r * math.cos(pose.rv_direction + math.pi + theta)
        py = cy + 0.6 * cavity_r * math.sin(pose.rv_direction + math.pi + theta)
        papillary |= ((x - px) ** 2 + (y - py) ** 2 < (PAPILLARY_RADIUS * pose.scale) ** 2) & cavity

    fat = np.zeros_like(cavity)
    for theta in pose.fat_angles:
        fx, fy = cx + (outer_r + 0.05) * math.cos(theta), cy + (outer_r + 0.05) * math.sin(theta)
        fat |= (x - fx) ** 2 + (y - fy) ** 2 < 0.045**2
    return {"cavity": cavity, "wall": wall, "rv": rv, "papillary": papillary, "fat": fat & ~rv}


def acdc_phase(
    rng: np.random.Generator, coords: Coords, pose: HeartPose, background: Sequence[Shape], phase: str
) -> tuple[np.ndarray, np.ndarray]:
    """One cine-MRI-like short-axis volume (normalised to [0,1]) and its RV/Myo/LV label."""
    z, y, x = coords
    shape = np.broadcast_shapes(z.shape, y.shape, x.shape)
    image = np.full(shape, MR_AIR, dtype=np.float64)
    label = np.zeros(shape, dtype=np.uint8)
    torso, muscle, inner = body_masks(coords, TORSO_RADII, 0.0, (TORSO_FAT_RIM, TORSO_MUSCLE_RIM))
    paint(image, label, torso, MR_FAT, 0)
    paint(image, label, muscle, MR_MUSCLE, 0)
    paint(image, label, inner, MR_TISSUE, 0)
    for structure in background:
        paint(image, label, structure.mask(coords) & inner, structure.intensity, 0)

    heart = heart_masks(coords, pose, phase)
    paint(image, label, heart["fat"] & inner, MR_FAT, 0)
    paint(image, label, heart["rv"], MR_RV_BLOOD, RV_LABEL)
    paint(image, label, heart["wall"], MR_MYO, MYO_LABEL)
    paint(image, label, heart["cavity"], MR_LV_BLOOD, LV_LABEL)
    image[heart["papillary"]] = MR_PAPILLARY  # papillary muscles belong to the LV label in ACDC

    image = finish_image(rng, image, MR_NOISE_SIGMA)
    image = np.abs(image) * (1.0 + MR_BIAS_AMPLITUDE * smooth_noise(rng, shape, TEXTURE_GRID))
    return minmax_normalize(image), label  # scanner units are arbitrary: normalise per volume


def acdc_case(rng: np.random.Generator, size: int, depth: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """ED and ES volumes of one synthetic patient: {phase: (image float32 [D,S,S], label uint8)}."""
    coords = case_coordinates(rng, depth, size)
    pose = HeartPose.sample(rng)
    background = [shape.jittered(rng) for shape in ACDC_BACKGROUND]
    return {phase: acdc_phase(rng, coords, pose, background, phase) for phase in ("ED", "ES")}


# ----------------------------------------------------------------------------- writer
def write_acdc_phantom(
    data_root: str | os.PathLike,
    list_dir: str | os.PathLike,
    num_train: int = ACDC_DEFAULTS["num_train"],
    num_valid: int = ACDC_DEFAULTS["num_valid"],
    num_test: int = ACDC_DEFAULTS["num_test"],
    size: int = ACDC_DEFAULTS["size"],
    depth: int = ACDC_DEFAULTS["depth"],
    seed: int = 0
) -> dict:
    """Write a synthetic ACDC set: ``data_root/{train,valid,test}`` and the list files.

    Patients are numbered 1..N (train, then valid, then test); each gives ED and ES volumes.
    Returns the paths to pass to build_dataset, the per-split list entries and the case
    names of the valid/test volumes (as build_dataset reports them).
    """
    check_counts(num_train=num_train, num_valid=num_valid, num_test=num_test, size=size, depth=depth)
    data_root, list_dir = os.fspath(data_root), os.fspath(list_dir)
    counts = dict(zip(ACDC_SPLITS, (num_train, num_valid, num_test)))
    entries: dict[str, list[str]] = {split: [] for split in ACDC_SPLITS}
    patient = 0
    for split in ACDC_SPLITS:
        for _ in range(counts[split]):
            patient += 1
            phases = acdc_case(np.random.default_rng([seed, patient]), size, depth)
            for phase, (image, label) in phases.items():
                entries[split] += write_acdc_case(data_root, split, acdc_case_name(patient), phase, image, label)
    for split in ACDC_SPLITS:
        write_list(os.path.join(list_dir, f"{split}.txt"), entries[split])
    case_names = {split: [acdc_entry_case_name(entry) for entry in entries[split]] for split in ("valid", "test")}
    return dict(root_path=data_root, volume_path=data_root, list_dir=list_dir, entries=entries,
                valid_cases=case_names["valid"], test_cases=case_names["test"])

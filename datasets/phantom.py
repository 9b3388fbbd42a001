"""Deterministic synthetic stand-ins for Synapse, ACDC, ISIC-2018 and SegPC-2021, in the real on-disk formats.

They let the whole pipeline (training, testing, metrics) run with no real data. Each case
is drawn from ``np.random.default_rng([seed, case_number])``: same seed -> identical files.

* Synapse-like CT: a body outline with fat rim, muscle wall, spine, IVC and bowel loops
  (background) and the 8 TransUNet organs as deformed ellipsoids, a tube (aorta) and a
  curved tapering tube (pancreas). Intensities are class-typical but overlap (both kidneys
  share one; liver/spleen/pancreas/muscle are close), plus smooth texture, blur and noise,
  so position and context matter. Pose, size and position vary per case.
* ACDC-like cine MRI short axis: torso, lungs, spine, descending aorta, liver, pericardial
  fat, and the heart: LV blood pool with papillary muscles, myocardium ring with apical cap,
  RV crescent that fades towards the apex. Each patient has ED and ES volumes (smaller LV
  cavity, thicker wall at ES); intensities are min-max normalised per volume like the
  preparation of the real data.
* ISIC-2018-like dermoscopy: warm skin with shading and vignetting, one darker irregular
  lesion (darker core, soft edge), dark hairs crossing it; label 1 = lesion.
* SegPC-2021-like microscopy: light stained background, pink red blood cells (unlabelled) and
  plasma cells with light purple cytoplasm (1) and an eccentric dark nucleus (2), itemised
  by the preparation's own code (one crop per cell by default).
Both RGB sets are written in the prepared format (``--dataset isic2018``), or, with
``--official``, as a fake official download for the preparation scripts.

    python -m datasets.phantom --dataset synapse --out data/phantom
    python -m datasets.phantom --dataset isic2018 --out data/phantom   # data/phantom/ISIC2018, lists/lists_ISIC2018
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image
from scipy import ndimage

from .acdc import ACDC_SPLITS, acdc_case_name, acdc_entry_case_name, write_acdc_case
from .common import atomic_path, minmax_normalize, write_list
from .isic2018 import (
    ISIC2018_DIR_NAME, ISIC2018_IMAGE_DIR, ISIC2018_IMAGE_SUFFIX, ISIC2018_LIST_DIR_NAME, ISIC2018_MASK_DIR,
    ISIC2018_MASK_SUFFIX,
)
from .prepare_segpc2021 import instance_class_map, segpc_items
from .rgb import RGB_SPLITS, write_rgb_item, write_split_lists
from .segpc2021 import (
    MASK_CYTOPLASM_VALUE, MASK_NUCLEUS_VALUE, SEGPC2021_DIR_NAME, SEGPC2021_IMAGE_DIR, SEGPC2021_LIST_DIR_NAME,
    SEGPC2021_MASK_DIR, SEGPC2021_SUFFIX,
)
from .synapse import (
    SYNAPSE_TEST_CASES, SYNAPSE_TRAIN_CASES, TEST_DIR_NAME, TEST_SPLIT, TRAIN_DIR_NAME, TRAIN_SPLIT,
    synapse_case_name, write_synapse_test_case, write_synapse_train_case,
)

Coords = tuple[np.ndarray, np.ndarray, np.ndarray]  # (z, y, x), broadcastable to [D,H,W]; z varies along D only

# ----------------------------------------------------------------------------- configuration
# Per-case pose: in-plane rotation (rad), isotropic scale range, xy / z shift, warp amplitude.
POSE_MAX_ROTATION = 0.14
POSE_SCALE_RANGE = (0.9, 1.1)
POSE_MAX_SHIFT = 0.05
POSE_MAX_Z_SHIFT = 0.04
WARP_AMPLITUDE = 0.03
WARP_GRID = (3, 5, 5)
# Per-structure jitter: centre shift, relative radius change, rotation, boundary wobble.
JITTER_CENTER = 0.035
JITTER_RADIUS = 0.12
JITTER_ANGLE = 0.25
WOBBLE_AMPLITUDE = 0.1
WOBBLE_ORDERS = (2, 3)
INTENSITY_JITTER = 0.02
# Image formation.
TEXTURE_AMPLITUDE = 0.025
TEXTURE_GRID = (4, 10, 10)
BLUR_SIGMA = (0.3, 0.7, 0.7)  # voxels (z, y, x)
CT_NOISE_SIGMA = 0.03
MR_NOISE_SIGMA = 0.03
MR_BIAS_AMPLITUDE = 0.12

SYNAPSE_DEFAULTS = dict(num_train=6, num_test=3, size=128, depth=24)
ACDC_DEFAULTS = dict(num_train=5, num_valid=1, num_test=2, size=128, depth=10)


# ----------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class Blob:
    """Deformed ellipsoid; centre (x, y, z), radii (rx, ry, rz), in-plane angle (rad)."""

    label: int
    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    intensity: float
    angle: float = 0.0
    wobble: tuple[tuple[int, float, float], ...] = ()  # (order, relative amplitude, phase)

    def jittered(self, rng: np.random.Generator) -> "Blob":
        center = tuple(c + rng.uniform(-JITTER_CENTER, JITTER_CENTER) for c in self.center)
        radii = tuple(r * rng.uniform(1 - JITTER_RADIUS, 1 + JITTER_RADIUS) for r in self.radii)
        wobble = tuple((k, rng.uniform(0, WOBBLE_AMPLITUDE), rng.uniform(0, 2 * math.pi)) for k in WOBBLE_ORDERS)
        return replace(self, center=center, radii=radii, angle=self.angle + rng.uniform(-JITTER_ANGLE, JITTER_ANGLE),
                       wobble=wobble, intensity=self.intensity + rng.uniform(-INTENSITY_JITTER, INTENSITY_JITTER))

    def mask(self, coords: Coords) -> np.ndarray:
        return masked_slab(coords, self.center[2] - self.radii[2], self.center[2] + self.radii[2], self._mask)

    def _mask(self, coords: Coords) -> np.ndarray:
        z, y, x = coords
        dx, dy = x - self.center[0], y - self.center[1]
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        lx = (cos * dx + sin * dy) / self.radii[0]
        ly = (-sin * dx + cos * dy) / self.radii[1]
        lz = (z - self.center[2]) / self.radii[2]
        bound = 1.0
        if self.wobble:  # deform the cross-section outline; scaling it with z keeps the tips whole
            phi = np.arctan2(ly, lx)
            bound = 1.0 + sum(amp * np.cos(k * phi + phase) for k, amp, phase in self.wobble)
        return lx**2 + ly**2 < bound**2 * (1.0 - lz**2)


def masked_slab(coords: Coords, z_low: float, z_high: float, mask_fn) -> np.ndarray:
    """Evaluate ``mask_fn`` only on the slices whose z lies in [z_low, z_high] (False elsewhere)."""
    z, y, x = coords
    shape = np.broadcast_shapes(z.shape, y.shape, x.shape)
    z_of_slice = np.broadcast_to(z, shape)[:, 0, 0]
    rows = np.flatnonzero((z_of_slice >= z_low) & (z_of_slice <= z_high))
    mask = np.zeros(shape, dtype=bool)
    if rows.size:
        slab = slice(rows[0], rows[-1] + 1)
        mask[slab] = mask_fn(tuple(np.broadcast_to(c, shape)[slab] for c in coords))
    return mask


@dataclass(frozen=True)
class Tube:
    """Vessel along z: centre (x, y) drifting by ``slope`` per unit depth, constant radius."""

    label: int
    center: tuple[float, float]
    radius: float
    intensity: float
    slope: tuple[float, float] = (0.0, 0.0)

    def jittered(self, rng: np.random.Generator) -> "Tube":
        center = tuple(c + rng.uniform(-JITTER_CENTER, JITTER_CENTER) for c in self.center)
        slope = tuple(s + rng.uniform(-0.05, 0.05) for s in self.slope)
        return replace(self, center=center, slope=slope,
                       radius=self.radius * rng.uniform(1 - JITTER_RADIUS, 1 + JITTER_RADIUS),
                       intensity=self.intensity + rng.uniform(-INTENSITY_JITTER, INTENSITY_JITTER))

    def mask(self, coords: Coords) -> np.ndarray:
        z, y, x = coords
        cx = self.center[0] + self.slope[0] * (z - 0.5)
        cy = self.center[1] + self.slope[1] * (z - 0.5)
        return (x - cx) ** 2 + (y - cy) ** 2 < self.radius**2


@dataclass(frozen=True)
class CurvedTube:
    """Tapering tube along a quadratic Bezier curve in-plane, limited to an ellipsoidal z range."""

    label: int
    points: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
    radii: tuple[float, float]  # at the first and last control point
    z_center: float
    z_radius: float
    intensity: float
    samples: int = 24

    def jittered(self, rng: np.random.Generator) -> "CurvedTube":
        points = tuple((px + rng.uniform(-JITTER_CENTER, JITTER_CENTER), py + rng.uniform(-JITTER_CENTER, JITTER_CENTER))
                       for px, py in self.points)
        scale = rng.uniform(1 - JITTER_RADIUS, 1 + JITTER_RADIUS)
        return replace(self, points=points, radii=(self.radii[0] * scale, self.radii[1] * scale),
                       z_center=self.z_center + rng.uniform(-JITTER_CENTER, JITTER_CENTER),
                       intensity=self.intensity + rng.uniform(-INTENSITY_JITTER, INTENSITY_JITTER))

    def mask(self, coords: Coords) -> np.ndarray:
        return masked_slab(coords, self.z_center - self.z_radius, self.z_center + self.z_radius, self._mask)

    def _mask(self, coords: Coords) -> np.ndarray:
        z, y, x = coords
        z_profile = np.sqrt(np.clip(1.0 - ((z - self.z_center) / self.z_radius) ** 2, 0.0, None))
        (x0, y0), (x1, y1), (x2, y2) = self.points
        inside = np.zeros(np.broadcast_shapes(z.shape, y.shape, x.shape), dtype=bool)
        for t in np.linspace(0.0, 1.0, self.samples):
            px = (1 - t) ** 2 * x0 + 2 * (1 - t) * t * x1 + t**2 * x2
            py = (1 - t) ** 2 * y0 + 2 * (1 - t) * t * y1 + t**2 * y2
            radius = (1 - t) * self.radii[0] + t * self.radii[1]
            inside |= (x - px) ** 2 + (y - py) ** 2 < (radius * z_profile) ** 2
        return inside


Shape = Blob | Tube | CurvedTube


# ----------------------------------------------------------------------------- Synapse anatomy
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


def normalized_grid(depth: int, size: int) -> Coords:
    """Voxel-centre coordinates: z in (0, 1), y and x in (-1, 1), broadcastable to [D,S,S]."""
    z = ((np.arange(depth) + 0.5) / depth)[:, None, None]
    yx = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    return z, yx[None, :, None], yx[None, None, :]


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], coarse: Sequence[int]) -> np.ndarray:
    """Unit-amplitude smooth random field: coarse Gaussian noise upsampled (linear) to ``shape``."""
    coarse = [max(2, min(c, s)) for c, s in zip(coarse, shape)]
    field = ndimage.zoom(rng.standard_normal(coarse), [s / c for s, c in zip(shape, coarse)], order=1)
    return field[tuple(slice(0, s) for s in shape)]


def case_coordinates(rng: np.random.Generator, depth: int, size: int) -> Coords:
    """Anatomical coordinates of every voxel under a random pose and a smooth warp."""
    z, y, x = normalized_grid(depth, size)
    angle = rng.uniform(-POSE_MAX_ROTATION, POSE_MAX_ROTATION)
    scale = rng.uniform(*POSE_SCALE_RANGE)
    shift_x, shift_y = rng.uniform(-POSE_MAX_SHIFT, POSE_MAX_SHIFT, size=2)
    cos, sin = math.cos(angle), math.sin(angle)
    ax = (cos * (x - shift_x) + sin * (y - shift_y)) / scale
    ay = (-sin * (x - shift_x) + cos * (y - shift_y)) / scale
    shape = (depth, size, size)
    ax = ax + WARP_AMPLITUDE * smooth_noise(rng, shape, WARP_GRID)
    ay = ay + WARP_AMPLITUDE * smooth_noise(rng, shape, WARP_GRID)
    az = np.broadcast_to(z + rng.uniform(-POSE_MAX_Z_SHIFT, POSE_MAX_Z_SHIFT), shape)
    return az, ay, ax


def paint(image: np.ndarray, label: np.ndarray, mask: np.ndarray, intensity: float, label_value: int) -> None:
    """Set image and label inside ``mask`` (in place)."""
    image[mask] = intensity
    label[mask] = label_value


def finish_image(rng: np.random.Generator, image: np.ndarray, noise_sigma: float) -> np.ndarray:
    """Add smooth texture, partial-volume blur and white noise."""
    image = image + TEXTURE_AMPLITUDE * smooth_noise(rng, image.shape, TEXTURE_GRID)
    image = ndimage.gaussian_filter(image, BLUR_SIGMA)
    return image + rng.normal(0.0, noise_sigma, size=image.shape)


def body_masks(coords: Coords, radii: tuple[float, float], center_y: float, rims: Sequence[float]) -> list[np.ndarray]:
    """Nested elliptic body masks: the outline, then shrunk by each cumulative rim width."""
    z, y, x = coords
    masks, inset = [], 0.0
    for width in (0.0, *rims):
        inset += width
        masks.append((x / (radii[0] - inset)) ** 2 + ((y - center_y) / (radii[1] - inset)) ** 2 < 1.0)
    return masks


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


# ----------------------------------------------------------------------------- ACDC anatomy
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
    def sample(cls, rng: np.random.Generator) -> "HeartPose":
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


# ----------------------------------------------------------------------------- ISIC-2018 dermoscopy
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
RGB_BLUR_SIGMA = 0.7
RGB_NOISE_SIGMA = 4.0
RGB_GRID = (4, 4)

SEGPC_NUM_CELLS = 3  # plasma cells per synthetic field


def unit_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y [H,1], x [1,W]) scaled by the shorter side: the shorter axis spans (-1, 1)."""
    scale = min(height, width) / 2.0
    y = ((np.arange(height) + 0.5) - height / 2.0) / scale
    x = ((np.arange(width) + 0.5) - width / 2.0) / scale
    return y[:, None], x[None, :]


def wobbly_ellipse(
    y: np.ndarray, x: np.ndarray, center: tuple[float, float], radii: tuple[float, float], angle: float,
    wobble: Sequence[tuple[int, float, float]] = (),
) -> np.ndarray:
    """Normalised radius (< 1 inside) of a rotated ellipse whose outline is modulated by cosines."""
    dy, dx = y - center[0], x - center[1]
    cos, sin = math.cos(angle), math.sin(angle)
    ly, lx = (-sin * dx + cos * dy) / radii[0], (cos * dx + sin * dy) / radii[1]
    bound = 1.0 + sum(amp * np.cos(order * np.arctan2(ly, lx) + phase) for order, amp, phase in wobble)
    return np.sqrt(lx**2 + ly**2) / bound


def finish_rgb(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Optical blur and sensor noise; uint8 [H,W,3]."""
    image = ndimage.gaussian_filter(image, (RGB_BLUR_SIGMA, RGB_BLUR_SIGMA, 0))
    image = image + rng.normal(0.0, RGB_NOISE_SIGMA, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


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


# ----------------------------------------------------------------------------- SegPC-2021 microscopy
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
def phantom_case_numbers(standard: Sequence[int], count: int, taken: set[int]) -> list[int]:
    """The first ``count`` standard case numbers, extended with unused numbers above them."""
    numbers = list(standard[:count])
    candidate = max((*standard, *taken)) + 1
    while len(numbers) < count:
        if candidate not in taken:
            numbers.append(candidate)
        candidate += 1
    return numbers


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def write_synapse_phantom(
    data_root: str | os.PathLike,
    list_dir: str | os.PathLike,
    num_train: int = SYNAPSE_DEFAULTS["num_train"],
    num_test: int = SYNAPSE_DEFAULTS["num_test"],
    size: int = SYNAPSE_DEFAULTS["size"],
    depth: int = SYNAPSE_DEFAULTS["depth"],
    seed: int = 0,
) -> dict:
    """Write a synthetic Synapse set: ``data_root/{train_npz,test_vol_h5}`` and the list files.

    Case numbers follow the TransUNet split (train case0005..., test case0001...).
    Returns the paths to pass to build_dataset and the case names.
    """
    _check_counts(num_train=num_train, num_test=num_test, size=size, depth=depth)
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
                num_train_slices=len(train_entries))


def write_acdc_phantom(
    data_root: str | os.PathLike,
    list_dir: str | os.PathLike,
    num_train: int = ACDC_DEFAULTS["num_train"],
    num_valid: int = ACDC_DEFAULTS["num_valid"],
    num_test: int = ACDC_DEFAULTS["num_test"],
    size: int = ACDC_DEFAULTS["size"],
    depth: int = ACDC_DEFAULTS["depth"],
    seed: int = 0,
) -> dict:
    """Write a synthetic ACDC set: ``data_root/{train,valid,test}`` and the list files.

    Patients are numbered 1..N (train, then valid, then test); each gives ED and ES volumes.
    Returns the paths to pass to build_dataset, the per-split list entries and the case
    names of the valid/test volumes (as build_dataset reports them).
    """
    _check_counts(num_train=num_train, num_valid=num_valid, num_test=num_test, size=size, depth=depth)
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


ItemMaker = Callable[[int], Sequence[tuple[str, np.ndarray, np.ndarray]]]


def _write_rgb_phantom(data_root: str | os.PathLike, list_dir: str | os.PathLike, split_counts: Sequence[int],
                       make_items: ItemMaker, **sizes: int) -> dict:
    """Write the items of ``split_counts`` = (train, val, test) consecutive images; ``make_items(index)`` gives
    the (entry, image, label) items of image ``index``. Every count and size must be >= 1. Returns the paths and
    the entries per split."""
    counts = dict(zip(RGB_SPLITS, split_counts))
    _check_counts(**{f"num_{split}": count for split, count in counts.items()}, **sizes)
    data_root, list_dir = os.fspath(data_root), os.fspath(list_dir)
    entries: dict[str, list[str]] = {split: [] for split in RGB_SPLITS}
    splits = [split for split in RGB_SPLITS for _ in range(counts[split])]
    for index, split in enumerate(splits):
        for entry, image, label in make_items(index):
            entries[split].append(write_rgb_item(data_root, entry, image, label))
    write_split_lists(list_dir, entries)
    return dict(root_path=data_root, volume_path=data_root, list_dir=list_dir, entries=entries)


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

    return _write_rgb_phantom(data_root, list_dir, (num_train, num_val, num_test), make_items, size=size)


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

    return _write_rgb_phantom(data_root, list_dir, (num_train, num_val, num_test), make_items, size=size,
                              field_size=field_size, num_cells=num_cells)


# ----------------------------------------------------------------------------- fake official downloads
def _save_image_file(path: str, array: np.ndarray, **options) -> None:
    """Atomically write an image file (format from the extension) with PIL."""
    with atomic_path(path) as tmp_path, open(tmp_path, "wb") as handle:
        Image.fromarray(array).save(handle, format=os.path.splitext(path)[1][1:].upper().replace("JPG", "JPEG"),
                                    **options)


JPEG_QUALITY = 95


def write_isic2018_download(src: str | os.PathLike, num_images: int = 10, height: int = 48, width: int = 64,
                            seed: int = 0) -> list[str]:
    """Write a fake ISIC-2018 Task 1 training download (jpg images, 0/255 png masks, a LICENSE file)."""
    _check_counts(num_images=num_images, height=height, width=width)
    src = os.fspath(src)
    image_dir, mask_dir = os.path.join(src, ISIC2018_IMAGE_DIR), os.path.join(src, ISIC2018_MASK_DIR)
    names = []
    for index in range(num_images):
        name = isic_phantom_name(index)
        image, label = isic_lesion_image(np.random.default_rng([seed, index]), height, width)
        _save_image_file(os.path.join(image_dir, name + ISIC2018_IMAGE_SUFFIX), image, quality=JPEG_QUALITY)
        _save_image_file(os.path.join(mask_dir, name + ISIC2018_MASK_SUFFIX), (label * 255).astype(np.uint8))
        names.append(name)
    write_list(os.path.join(image_dir, "LICENSE.txt"), ["synthetic phantom images, no licence needed"])
    return names


def write_segpc2021_download(src: str | os.PathLike, num_train: int = 4, num_validation: int = 2, num_test: int = 1,
                             height: int = 96, width: int = 128, num_cells: int = SEGPC_NUM_CELLS,
                             seed: int = 0) -> dict[str, list[str]]:
    """Write a fake SegPC-2021 download: ``TCIA_SegPC_dataset/{train,validation}/{x,y}`` (bmp fields,
    one bmp mask per cell, 20 cytoplasm / 40 nucleus) and a label-less ``test/x``.
    Returns the image names per subset."""
    _check_counts(num_train=num_train, height=height, width=width, num_cells=num_cells)  # validation/test may be 0
    root = os.path.join(os.fspath(src), "TCIA_SegPC_dataset")
    counts = {"train": num_train, "validation": num_validation, "test": num_test}
    names: dict[str, list[str]] = {subset: [] for subset in counts}
    index = 0
    for subset, count in counts.items():
        for _ in range(count):
            name = segpc_phantom_name(index)
            image, masks = segpc_field(np.random.default_rng([seed, index]), height, width, num_cells)
            _save_image_file(os.path.join(root, subset, SEGPC2021_IMAGE_DIR, name + SEGPC2021_SUFFIX), image)
            if subset != "test":  # the official test images come without masks
                for n, mask in enumerate(masks, start=1):
                    mask_name = f"{name}_{n}{SEGPC2021_SUFFIX}"
                    _save_image_file(os.path.join(root, subset, SEGPC2021_MASK_DIR, mask_name), mask)
            names[subset].append(name)
            index += 1
    return names


# ----------------------------------------------------------------------------- CLI
RGB_PHANTOMS = {  # name -> (data folder, list folder, prepared writer, fake-download writer)
    "isic2018": (ISIC2018_DIR_NAME, ISIC2018_LIST_DIR_NAME, write_isic2018_phantom, write_isic2018_download),
    "segpc2021": (SEGPC2021_DIR_NAME, SEGPC2021_LIST_DIR_NAME, write_segpc2021_phantom, write_segpc2021_download),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write a deterministic synthetic Synapse, ACDC, ISIC-2018 or "
                                                 "SegPC-2021 data set.")
    parser.add_argument("--dataset", choices=("synapse", "acdc", *RGB_PHANTOMS), required=True)
    parser.add_argument("--out", required=True, help="writes OUT/<Synapse|ACDC|ISIC2018|SegPC2021>/... and "
                                                     "OUT/lists/lists_<name>/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=None, help="slice (RGB: image) height and width")
    parser.add_argument("--depth", type=int, default=None, help="slices per volume (Synapse, ACDC)")
    parser.add_argument("--num_train", type=int, default=None,
                        help="training cases (patients for ACDC, fields for SegPC-2021)")
    parser.add_argument("--num_test", type=int, default=None, help="test cases (patients for ACDC)")
    parser.add_argument("--num_valid", type=int, default=None, help="validation patients / images (not Synapse)")
    parser.add_argument("--official", action="store_true",
                        help="RGB sets: write a fake official download to OUT/<name>_official instead (only --seed)")
    return parser.parse_args(argv)


def rgb_phantom_main(args: argparse.Namespace, options: dict) -> int:
    """The CLI for the RGB sets (prepared phantom, or a fake official download with ``--official``)."""
    dir_name, list_name, write_prepared, write_download = RGB_PHANTOMS[args.dataset]
    if "depth" in options:
        print("error: --depth applies to Synapse and ACDC only (the RGB sets are 2-D)", file=sys.stderr)
        return 2
    if args.official:
        if options:
            print("error: --official takes only --seed", file=sys.stderr)
            return 2
        src = os.path.join(args.out, f"{dir_name}_official")
        write_download(src, seed=args.seed)
        print(f"wrote a fake official {dir_name} download to {src}")
        return 0
    if "num_valid" in options:
        options["num_val"] = options.pop("num_valid")
    result = write_prepared(os.path.join(args.out, dir_name), os.path.join(args.out, "lists", list_name),
                            seed=args.seed, **options)
    counts = ", ".join(f"{len(v)} {k}" for k, v in result["entries"].items())
    print(f"wrote {counts} items to {result['root_path']}, lists in {result['list_dir']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = parse_args(argv)
    options = {key: getattr(args, key) for key in ("size", "depth", "num_train", "num_test", "num_valid")}
    options = {key: value for key, value in options.items() if value is not None}
    if args.dataset in RGB_PHANTOMS:
        return rgb_phantom_main(args, options)
    if args.official:
        print("error: --official applies to isic2018 and segpc2021 only", file=sys.stderr)
        return 2
    if args.dataset == "synapse":
        if "num_valid" in options:
            print("error: --num_valid applies to ACDC only (Synapse has no validation split)", file=sys.stderr)
            return 2
        result = write_synapse_phantom(os.path.join(args.out, "Synapse"), os.path.join(args.out, "lists", "lists_Synapse"),
                                       seed=args.seed, **options)
        print(f"wrote {result['num_train_slices']} training slices to {result['root_path']}, "
              f"{len(result['test_cases'])} test volumes to {result['volume_path']}, lists in {result['list_dir']}")
    else:
        result = write_acdc_phantom(os.path.join(args.out, "ACDC"), os.path.join(args.out, "lists", "lists_ACDC"),
                                    seed=args.seed, **options)
        counts = ", ".join(f"{len(v)} {k}" for k, v in result["entries"].items())
        print(f"wrote {counts} items to {result['root_path']}, lists in {result['list_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared pieces of the synthetic data sets (each set's generator is ``datasets/phantoms/<name>.py``).

Volume geometry (random pose and warp, jittered deformable shapes, image formation) for the grey sets, pixel
helpers and one writer for the 2-D colour sets, and the argument checks all writers share. Kept in one place so a
new set's phantom reuses tested geometry; every generator draws from ``np.random.default_rng([seed, case])`` so the
same seed gives identical files.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from ..rgb import RGB_SPLITS, write_rgb_item, write_split_lists

Coords = tuple[np.ndarray, np.ndarray, np.ndarray]  # (z, y, x), broadcastable to [D,H,W]; z varies along D only

# ----------------------------------------------------------------------------- volume configuration
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

    def jittered(self, rng: np.random.Generator) -> Blob:
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

    def jittered(self, rng: np.random.Generator) -> Tube:
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

    def jittered(self, rng: np.random.Generator) -> CurvedTube:
        points = tuple((px + rng.uniform(-JITTER_CENTER, JITTER_CENTER),
                        py + rng.uniform(-JITTER_CENTER, JITTER_CENTER)) for px, py in self.points)
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


# ----------------------------------------------------------------------------- volumes
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


# ----------------------------------------------------------------------------- 2-D colour images
RGB_BLUR_SIGMA = 0.7
RGB_NOISE_SIGMA = 4.0
RGB_GRID = (4, 4)


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


def check_counts(**counts: int) -> None:
    """ValueError naming the first count or size below 1 (an empty split would only fail later, in training)."""
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


ItemMaker = Callable[[int], Sequence[tuple[str, np.ndarray, np.ndarray]]]


def write_rgb_phantom(data_root: str | os.PathLike, list_dir: str | os.PathLike, split_counts: Sequence[int],
                      make_items: ItemMaker, **sizes: int) -> dict:
    """Write the items of ``split_counts`` = (train, val, test) consecutive images; ``make_items(index)`` gives
    the (entry, image, label) items of image ``index``. Every count and size must be >= 1. Returns the paths and
    the entries per split."""
    counts = dict(zip(RGB_SPLITS, split_counts))
    check_counts(**{f"num_{split}": count for split, count in counts.items()}, **sizes)
    data_root, list_dir = os.fspath(data_root), os.fspath(list_dir)
    entries: dict[str, list[str]] = {split: [] for split in RGB_SPLITS}
    splits = [split for split in RGB_SPLITS for _ in range(counts[split])]
    for index, split in enumerate(splits):
        for entry, image, label in make_items(index):
            entries[split].append(write_rgb_item(data_root, entry, image, label))
    write_split_lists(list_dir, entries)
    return dict(root_path=data_root, volume_path=data_root, list_dir=list_dir, entries=entries)


"""Label overlays for qualitative figures (ground truth | prediction panels) and atomic PNG writing."""
from __future__ import annotations

import colorsys
import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["CLASS_COLOURS", "class_colours", "overlay", "side_by_side", "save_png"]

# Distinct colours for classes 1, 2, ... (background is transparent); more classes get generated hues.
CLASS_COLOURS = np.array([
    (230, 25, 75), (255, 140, 0), (255, 225, 25), (60, 180, 75), (0, 90, 255), (145, 30, 180),
    (240, 50, 230), (70, 240, 240), (255, 20, 147), (170, 110, 40), (128, 128, 0), (0, 191, 255),
], dtype=np.uint8)
_GOLDEN_RATIO_CONJUGATE = 0.618033988749895  # spreads generated hues evenly
PANEL_GAP = 4  # white pixels between panels


def class_colours(num_classes: int) -> np.ndarray:
    """uint8 [num_classes, 3] colour table; row 0 (background) is black and never drawn."""
    extra = max(num_classes - 1 - len(CLASS_COLOURS), 0)
    generated = [np.round(255 * np.array(colorsys.hsv_to_rgb((i * _GOLDEN_RATIO_CONJUGATE) % 1.0, 0.9, 0.95)))
                 for i in range(extra)]
    table = np.concatenate([np.zeros((1, 3)), CLASS_COLOURS[:num_classes - 1], np.reshape(generated, (-1, 3))])
    return table.astype(np.uint8)


def _grey_uint8(image2d: np.ndarray) -> np.ndarray:
    """Image min-max normalised to [0, 1] (a constant image becomes 0), as uint8 grey levels."""
    image = np.asarray(image2d, dtype=np.float64)
    low, high = image.min(), image.max()
    normalised = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return np.round(normalised * 255).astype(np.uint8)


def overlay(image2d: np.ndarray, label2d: np.ndarray, num_classes: int, alpha: float = 0.5) -> np.ndarray:
    """Grey image with each foreground class blended in its colour: uint8 RGB [H, W, 3].

    Background pixels keep the grey value; a class pixel is ``(1 - alpha) * grey + alpha * colour``.
    """
    image2d, label2d = np.asarray(image2d), np.asarray(label2d)
    if image2d.ndim != 2 or image2d.shape != label2d.shape:
        raise ValueError(f"overlay: expected 2-D image and label of the same shape, got {image2d.shape} "
                         f"and {label2d.shape}")
    if not np.all(np.isfinite(image2d)):
        raise ValueError("overlay: image contains NaN/inf")
    if label2d.size and (label2d.min() < 0 or label2d.max() >= num_classes):
        raise ValueError(f"overlay: labels must lie in [0, {num_classes - 1}], found [{label2d.min()}, "
                         f"{label2d.max()}]")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay: alpha must be in [0, 1], got {alpha}")

    grey = np.repeat(_grey_uint8(image2d)[..., None], 3, axis=-1)
    colours = class_colours(num_classes)[label2d.astype(np.int64)]
    blended = np.round((1.0 - alpha) * grey + alpha * colours).astype(np.uint8)
    return np.where((label2d > 0)[..., None], blended, grey)


def side_by_side(*rgb: np.ndarray, gap: int = PANEL_GAP) -> np.ndarray:
    """Panels [H, W_i, 3] of equal height joined left to right, separated by ``gap`` white columns."""
    if not rgb:
        raise ValueError("side_by_side: no panels given")
    heights = {panel.shape[0] for panel in rgb}
    if len(heights) != 1 or any(panel.ndim != 3 or panel.shape[2] != 3 for panel in rgb):
        raise ValueError(f"side_by_side: expected RGB panels of one height, got {[p.shape for p in rgb]}")
    separator = np.full((heights.pop(), gap, 3), 255, dtype=np.uint8)
    pieces = [piece for panel in rgb for piece in (separator, panel.astype(np.uint8, copy=False))][1:]
    return np.concatenate(pieces, axis=1)


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write ``rgb`` (uint8 [H, W, 3]) as a PNG; a temporary file in the same folder is renamed into place,
    so ``path`` never holds a half-written image. Missing parent folders are created."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"save_png: expected uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same folder, so os.replace is atomic
    try:
        Image.fromarray(rgb).save(temporary, format="PNG")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise

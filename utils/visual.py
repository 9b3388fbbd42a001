"""Label overlays for qualitative figures (ground truth | prediction panels), panel grids with text and legends,
and atomic PNG writing. Images are grey [H, W] or RGB ([3, H, W] or [H, W, 3]); everything returned is uint8 RGB."""
from __future__ import annotations

import colorsys
import functools
import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from datasets.io.atomic import atomic_path

__all__ = ["CLASS_COLOURS", "class_colours", "display_rgb", "overlay", "side_by_side", "image_grid", "text_strip",
           "legend", "legend_height", "save_png"]

# Distinct colours for classes 1, 2, ... (background is transparent); more classes get generated hues.
CLASS_COLOURS = np.array([
    (230, 25, 75), (255, 140, 0), (255, 225, 25), (60, 180, 75), (0, 90, 255), (145, 30, 180),
    (240, 50, 230), (70, 240, 240), (255, 20, 147), (170, 110, 40), (128, 128, 0), (0, 191, 255),
], dtype=np.uint8)
_GOLDEN_RATIO_CONJUGATE = 0.618033988749895  # spreads generated hues evenly
PANEL_GAP = 4  # white pixels between panels
RGB_CHANNELS = 3
WHITE, BLACK = 255, (0, 0, 0)
# Text strips and legends: one line of text is TEXT_HEIGHT pixels; a legend entry (swatch + name) takes
# LEGEND_ITEM_WIDTH pixels of a line.
FONT_SIZE = 11
TEXT_HEIGHT = 16
TEXT_MARGIN = 3
SWATCH_SIZE = 10
LEGEND_ITEM_WIDTH = 120


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


def _channels_last(image: np.ndarray, spatial_shape: tuple[int, ...] | None) -> np.ndarray | None:
    """RGB image as [H, W, 3] (from [3, H, W] or [H, W, 3]); None when it is neither (or ambiguous).

    ``spatial_shape`` (the label's [H, W]) decides the layout when given."""
    if image.ndim != 3:
        return None
    first = image.shape[0] == RGB_CHANNELS and spatial_shape in (None, image.shape[1:])
    last = image.shape[2] == RGB_CHANNELS and spatial_shape in (None, image.shape[:2])
    if first == last:
        return None
    return np.moveaxis(image, 0, -1) if first else image


def display_rgb(image: np.ndarray, spatial_shape: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 [H, W, 3] for display: a grey [H, W] image min-max scaled and repeated over the channels; an RGB
    image ([3, H, W] or [H, W, 3], e.g. ImageNet-normalised floats) min-max scaled per channel, which undoes any
    per-channel normalisation up to each channel's range. ``spatial_shape`` resolves [3, H, 3]-like layouts."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] == 1 and spatial_shape in (None, image.shape[1:]):
        image = image[0]  # a grey model's [1, H, W] input
    if image.ndim == 2 and spatial_shape in (None, image.shape):
        return np.repeat(_grey_uint8(image)[..., None], RGB_CHANNELS, axis=-1)
    rgb = _channels_last(image, None if spatial_shape is None else tuple(spatial_shape))
    if rgb is None:
        size = "" if spatial_shape is None else f" with [H, W] = {tuple(spatial_shape)}"
        raise ValueError(f"expected a grey or RGB image [H, W], [3, H, W] or [H, W, 3]{size}, got {image.shape}")
    return np.stack([_grey_uint8(rgb[..., channel]) for channel in range(RGB_CHANNELS)], axis=-1)


def overlay(image: np.ndarray, label2d: np.ndarray, num_classes: int, alpha: float = 0.5) -> np.ndarray:
    """Image with each foreground class blended in its colour: uint8 RGB [H, W, 3].

    ``image`` is grey [H, W] or RGB [3, H, W] / [H, W, 3] (shown as :func:`display_rgb` does). Background pixels
    keep the image's display value; a class pixel is ``(1 - alpha) * image + alpha * colour``.
    """
    image, label2d = np.asarray(image), np.asarray(label2d)
    if image.ndim == 3 and image.shape[0] == 1 and image.shape[1:] == label2d.shape:
        image = image[0]  # a grey model's [1, H, W] input
    if label2d.ndim != 2 or not (image.shape == label2d.shape or _channels_last(image, label2d.shape) is not None):
        raise ValueError(f"overlay: expected a 2-D label and a grey image of the same shape (or RGB [3, H, W] / "
                         f"[H, W, 3]), got {image.shape} and {label2d.shape}")
    if not np.all(np.isfinite(image)):
        raise ValueError("overlay: image contains NaN/inf")
    if label2d.size and (label2d.min() < 0 or label2d.max() >= num_classes):
        raise ValueError(f"overlay: labels must lie in [0, {num_classes - 1}], found [{label2d.min()}, "
                         f"{label2d.max()}]")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay: alpha must be in [0, 1], got {alpha}")

    shown = display_rgb(image, label2d.shape)
    colours = class_colours(num_classes)[label2d.astype(np.int64)]
    blended = np.round((1.0 - alpha) * shown + alpha * colours).astype(np.uint8)
    return np.where((label2d > 0)[..., None], blended, shown)


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


def image_grid(rows: Sequence[Sequence[np.ndarray]], gap: int = PANEL_GAP) -> np.ndarray:
    """RGB panels in rows and columns, each in a cell of the largest panel's size (placed top-left, white
    around it), ``gap`` white pixels between cells: [R * h + (R - 1) * gap, C * w + (C - 1) * gap, 3] for R rows of
    at most C panels, h x w the largest height and width."""
    if not rows or not all(rows):
        raise ValueError("image_grid: expected at least one row, each with at least one panel")
    panels = [panel for row in rows for panel in row]
    if any(panel.ndim != 3 or panel.shape[2] != RGB_CHANNELS for panel in panels):
        raise ValueError(f"image_grid: expected RGB panels [H, W, 3], got {[p.shape for p in panels]}")
    height, width = max(p.shape[0] for p in panels), max(p.shape[1] for p in panels)
    columns = max(len(row) for row in rows)
    grid = np.full((len(rows) * (height + gap) - gap, columns * (width + gap) - gap, RGB_CHANNELS), WHITE,
                   dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            top, left = r * (height + gap), c * (width + gap)
            grid[top:top + panel.shape[0], left:left + panel.shape[1]] = panel
    return grid


@functools.cache
def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def text_strip(text: str, width: int, height: int = TEXT_HEIGHT, centre: bool = False) -> np.ndarray:
    """White uint8 strip [height, width, 3] with one line of black text (cut off at the strip's edge)."""
    strip = Image.new("RGB", (width, height), (WHITE,) * RGB_CHANNELS)
    draw = ImageDraw.Draw(strip)
    left = max((width - draw.textlength(text, font=_font())) / 2, 0) if centre else TEXT_MARGIN
    draw.text((left, height / 2), text, fill=BLACK, font=_font(), anchor="lm")
    return np.asarray(strip)


def legend_height(count: int, width: int) -> int:
    """Height of :func:`legend` for ``count`` entries in ``width`` pixels."""
    per_line = max(width // LEGEND_ITEM_WIDTH, 1)
    return math.ceil(count / per_line) * TEXT_HEIGHT


def legend(names: Sequence[str], colours: np.ndarray, width: int) -> np.ndarray:
    """White uint8 block [legend_height(len(names), width), width, 3]: per entry a colour swatch and its name,
    entries of LEGEND_ITEM_WIDTH pixels filling lines left to right."""
    colours = np.asarray(colours)
    if len(names) != len(colours) or not len(names):
        raise ValueError(f"legend: expected one colour per name (at least one), got {len(names)} names and "
                         f"{len(colours)} colours")
    per_line = max(width // LEGEND_ITEM_WIDTH, 1)
    block = Image.new("RGB", (width, legend_height(len(names), width)), (WHITE,) * RGB_CHANNELS)
    draw = ImageDraw.Draw(block)
    for index, (name, colour) in enumerate(zip(names, colours)):
        left = (index % per_line) * LEGEND_ITEM_WIDTH + TEXT_MARGIN
        middle = (index // per_line) * TEXT_HEIGHT + TEXT_HEIGHT // 2
        top = middle - SWATCH_SIZE // 2
        draw.rectangle((left, top, left + SWATCH_SIZE - 1, top + SWATCH_SIZE - 1), fill=tuple(int(c) for c in colour),
                       outline=BLACK)
        draw.text((left + SWATCH_SIZE + TEXT_MARGIN, middle), name, fill=BLACK, font=_font(), anchor="lm")
    return np.asarray(block)


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write ``rgb`` (uint8 [H, W, 3]) as a PNG; a temporary file in the same folder is renamed into place,
    so ``path`` never holds a half-written image. Missing parent folders are created."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"save_png: expected uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    with atomic_path(path) as temporary:
        Image.fromarray(rgb).save(temporary, format="PNG")

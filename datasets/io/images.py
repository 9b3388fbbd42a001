"""Image files (PIL): RGB images and masks in (the preparations, support folders, prediction), PNG / BMP / JPEG out
(phantom downloads, predicted label maps). Reading decodes the whole file, so a corrupt or truncated file is one
DataError naming it; writing is atomic."""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .atomic import atomic_path

__all__ = ["open_image", "read_rgb_image", "read_mask_image", "read_label_png", "png_bytes", "save_image_file"]


def open_image(path: str | os.PathLike) -> Image.Image:
    """A decoded PIL image; DataError for a missing, corrupt or truncated file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(path, "file does not exist")
    try:
        image = Image.open(path)
        image.load()  # decode now: truncated files fail here, not later
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(path, f"cannot read image (corrupt, truncated or not an image): {exc}") from exc
    return image


def read_rgb_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 [H,W,3] RGB (grey/palette/CMYK converted); DataError if unreadable."""
    return np.asarray(open_image(path).convert("RGB"), dtype=np.uint8)


def read_mask_image(path: str | os.PathLike) -> np.ndarray:
    """A mask image as uint8 [H,W]; of a 3-channel mask (all channels equal) the first channel."""
    path = os.fspath(path)
    image = open_image(path)
    if image.mode in ("P", "1"):  # palette / bilevel: the grey value each pixel shows
        image = image.convert("L")
    if image.mode not in ("L", "RGB", "RGBA"):
        raise DataError(path, f"unsupported mask mode {image.mode!r} (expected 8-bit grey or RGB)")
    array = np.asarray(image, dtype=np.uint8)
    return array[..., 0] if array.ndim == 3 else array


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """A label map as :func:`png_bytes` wrote it: the stored class indices, unconverted."""
    return np.asarray(open_image(path))


def png_bytes(array: np.ndarray) -> bytes:
    """The PNG file of an array (a label map of class indices: uint8, or int16 beyond 256 classes)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def save_image_file(path: str, array: np.ndarray, **options) -> None:
    """Atomically write an image file (format from the extension) with PIL."""
    with atomic_path(path) as tmp_path, open(tmp_path, "wb") as handle:
        Image.fromarray(array).save(handle, format=os.path.splitext(path)[1][1:].upper().replace("JPG", "JPEG"),
                                    **options)

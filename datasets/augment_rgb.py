"""Training-time augmentation of 2-D colour images (ISIC-2018, SegPC-2021) and ImageNet normalisation.

Geometric ops act identically on image and label (label: nearest neighbour, fill 0 =
background): horizontal / vertical flip, a multiple of 90 degrees (dermoscopy and
microscopy have no canonical orientation, so the whole dihedral group is valid), and with
some probability a small rotation. Colour jitter (brightness, contrast, saturation, hue)
changes the image only. Then both are resized to ``output_size`` and the image is
normalised with the ImageNet statistics of the MaxViT encoder's pretraining.

Every random choice is drawn from the ``rng`` argument (:func:`sample_rgb_params`) and then
applied with torchvision's functional ops (:func:`apply_rgb_params`), so an item is
reproducible from (seed, epoch, index) exactly like the grey data sets.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "RGBAugmentOptions", "RGBAugmentParams", "RGBAugment",
    "sample_rgb_params", "apply_rgb_params", "image_to_unit_tensor", "normalize_image", "normalize_tensor",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UINT8_MAX = 255.0

FLIP_PROBABILITY = 0.5
ROTATE_PROBABILITY = 0.5
MAX_ROTATION_DEGREES = 20.0
JITTER_PROBABILITY = 0.8
# Relative jitter ranges: factor in [1 - r, 1 + r] (hue: shift in [-r, r] of a full turn). Hue is kept
# small so that skin and Giemsa-stain colours stay plausible.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0.2, 0.2, 0.2, 0.02


@dataclass(frozen=True)
class RGBAugmentParams:
    """One draw of the augmentation; ``jitter`` = (brightness, contrast, saturation, hue) or None."""

    hflip: bool = False
    vflip: bool = False
    rot90_k: int = 0
    angle: float = 0.0
    jitter: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class RGBAugmentOptions:
    """Probabilities and ranges of the augmentation; ``rot90=False`` disables the quarter turns and
    ``jitter_ranges`` = (brightness, contrast, saturation, hue) relative ranges."""

    flip_p: float = FLIP_PROBABILITY
    rot90: bool = True
    rotate_p: float = ROTATE_PROBABILITY
    max_angle: float = MAX_ROTATION_DEGREES
    jitter_p: float = JITTER_PROBABILITY
    jitter_ranges: tuple[float, float, float, float] = (BRIGHTNESS, CONTRAST, SATURATION, HUE)


def sample_rgb_params(rng: np.random.Generator, options: RGBAugmentOptions = RGBAugmentOptions()) -> RGBAugmentParams:
    """Draw every random choice of one item from ``rng`` (always the same number of draws, whatever the options)."""
    hflip, vflip = bool(rng.random() < options.flip_p), bool(rng.random() < options.flip_p)
    rot90_k = int(rng.integers(0, 4))
    rotate = rng.random() < options.rotate_p
    angle = float(rng.uniform(-options.max_angle, options.max_angle))
    do_jitter = rng.random() < options.jitter_p
    brightness, contrast, saturation, hue = options.jitter_ranges
    factors = (
        float(rng.uniform(1 - brightness, 1 + brightness)),
        float(rng.uniform(1 - contrast, 1 + contrast)),
        float(rng.uniform(1 - saturation, 1 + saturation)),
        float(rng.uniform(-hue, hue)),
    )
    return RGBAugmentParams(hflip=hflip, vflip=vflip, rot90_k=rot90_k if options.rot90 else 0,
                            angle=angle if rotate else 0.0, jitter=factors if do_jitter else None)


def image_to_unit_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """[H,W,3] uint8 (0..255) or float (0..1) -> float32 tensor [3,H,W] in [0,1]."""
    if isinstance(image, np.ndarray) and not image.flags.writeable:
        image = np.array(image)  # PIL's arrays are read-only, which torch.as_tensor warns about
    tensor = torch.as_tensor(np.ascontiguousarray(image))
    if tensor.ndim != 3 or tensor.shape[-1] != 3:
        raise ValueError(f"expected an RGB image [H,W,3], got shape {tuple(tensor.shape)}")
    if tensor.dtype == torch.uint8:
        tensor = tensor.float() / UINT8_MAX
    return tensor.to(torch.float32).permute(2, 0, 1).contiguous()


def normalize_tensor(image: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of a [3,H,W] tensor in [0,1]."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=image.dtype).view(3, 1, 1)
    return (image - mean) / std


def normalize_image(image: np.ndarray) -> np.ndarray:
    """[H,W,3] uint8 (or float in [0,1]) -> ImageNet-normalised np.float32 [3,H,W] (eval items)."""
    return normalize_tensor(image_to_unit_tensor(image)).numpy()


def apply_rgb_params(
    image: torch.Tensor, label: torch.Tensor, params: RGBAugmentParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one draw: image float [3,H,W] in [0,1], label integer [H,W]; same geometry for both."""
    label = label.unsqueeze(0)  # torchvision ops want a channel axis
    if params.hflip:
        image, label = TF.horizontal_flip(image), TF.horizontal_flip(label)
    if params.vflip:
        image, label = TF.vertical_flip(image), TF.vertical_flip(label)
    if params.rot90_k:
        image, label = torch.rot90(image, params.rot90_k, (1, 2)), torch.rot90(label, params.rot90_k, (1, 2))
    if params.angle:
        image = TF.rotate(image, params.angle, interpolation=InterpolationMode.BILINEAR, fill=0.0)
        label = TF.rotate(label, params.angle, interpolation=InterpolationMode.NEAREST, fill=0)
    if params.jitter is not None:
        brightness, contrast, saturation, hue = params.jitter
        image = TF.adjust_brightness(image, brightness)
        image = TF.adjust_contrast(image, contrast)
        image = TF.adjust_saturation(image, saturation)
        image = TF.adjust_hue(image, hue)
    return image.contiguous(), label[0].contiguous()


def resize_pair_tensors(
    image: torch.Tensor, label: torch.Tensor, output_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize image (bilinear, antialiased) and label (nearest) to ``output_size``."""
    if tuple(image.shape[-2:]) == tuple(output_size):
        return image, label
    image = TF.resize(image, list(output_size), interpolation=InterpolationMode.BILINEAR, antialias=True)
    label = TF.resize(label.unsqueeze(0), list(output_size), interpolation=InterpolationMode.NEAREST)[0]
    return image, label


class RGBAugment:
    """Callable ``(image [H,W,3], label [H,W], rng) -> (FloatTensor[3,h,w] normalised, LongTensor[h,w])``.

    ``image`` is uint8 (0..255) or float (0..1). Keyword ``options`` are the fields of
    :class:`RGBAugmentOptions` (defaults: the module constants); pass ``rotate_p=0, jitter_p=0,
    flip_p=0, rot90=False`` for a plain resize.
    """

    def __init__(self, output_size: tuple[int, int] | list[int], **options: Any) -> None:
        if len(output_size) != 2:
            raise ValueError(f"output_size must be (H, W), got {output_size!r}")
        self.output_size = (int(output_size[0]), int(output_size[1]))
        if "jitter_ranges" in options:
            options["jitter_ranges"] = tuple(options["jitter_ranges"])
        self.options = RGBAugmentOptions(**options)

    def sample(self, rng: np.random.Generator) -> RGBAugmentParams:
        """The parameters this transform draws from ``rng``."""
        return sample_rgb_params(rng, self.options)

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image_t = image_to_unit_tensor(image)
        label_t = torch.as_tensor(np.asarray(label, dtype=np.int64))
        if tuple(label_t.shape) != tuple(image_t.shape[1:]):
            raise ValueError(f"label shape {tuple(label_t.shape)} differs from image shape {tuple(image_t.shape[1:])}")
        image_t, label_t = apply_rgb_params(image_t, label_t, self.sample(rng))
        image_t, label_t = resize_pair_tensors(image_t, label_t, self.output_size)
        return normalize_tensor(image_t.clamp(0.0, 1.0)), label_t.to(torch.int64)

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value}" for key, value in asdict(self.options).items())
        return f"{type(self).__name__}(output_size={self.output_size}, {options})"

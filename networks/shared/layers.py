"""Layers shared by both encoders."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import to_map, to_tokens


def resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize (the release's interpolation everywhere); a no-op when the size already matches."""
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ImageInjection(nn.Module):
    """Re-inject the image into a stage's features: f + sigmoid(f) * conv1x1(image resized to f)."""

    def __init__(self, channels: int, image_channels: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(image_channels, channels, 1)

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return features + torch.sigmoid(features) * self.proj(resize(image, features.shape[-2:]))


class OverlapPatchEmbed(nn.Module):
    """Strided convolution with overlapping patches, then LayerNorm over channels (SegFormer style)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return to_map(self.norm(to_tokens(x)), *x.shape[-2:])

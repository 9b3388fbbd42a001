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


class SharedAffineBatchNorm2d(nn.Module):
    """BatchNorm2d for one module applied at several call sites of a forward: one learned affine transform (weight,
    bias: the parameters of a single BatchNorm2d), running statistics per site (``sites.<i>``, plain affine-free
    BatchNorm2d layers).

    Why: a module reused at ``sites`` places sees a different input distribution at each. With one set of running
    statistics, training normalises every call by its own batch, but evaluation normalises every call by the average
    over the sites, which fits none of them. forward(x, site) normalises with site ``site``'s statistics.

    A state dict of a single BatchNorm2d (``running_mean`` / ``running_var`` / ``num_batches_tracked`` beside
    ``weight`` / ``bias``) loads too, its statistics copied to every site.
    """

    STATISTICS = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(self, num_features: int, sites: int, eps: float = 1e-5, momentum: float | None = 0.1):
        super().__init__()
        if sites < 1:
            raise ValueError(f"sites must be at least 1, got {sites}")
        self.num_features = num_features
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.sites = nn.ModuleList(nn.BatchNorm2d(num_features, eps, momentum, affine=False) for _ in range(sites))

    def forward(self, x: torch.Tensor, site: int) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        return self.sites[site](x) * self.weight.view(shape) + self.bias.view(shape)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in self.STATISTICS:
            shared = state_dict.pop(prefix + name, None)
            if shared is not None:
                for index in range(len(self.sites)):
                    state_dict.setdefault(f"{prefix}sites.{index}.{name}", shared.clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{self.num_features}, sites={len(self.sites)}"

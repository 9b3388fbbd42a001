"""UniverSeg's building blocks, re-implemented: the pairwise cross convolution and the CrossBlock.

Shapes: the query feature map is ``[B, C, H, W]``, the supports ``[B, k, C, H, W]`` (k >= 1, any order). Every
operation treats the supports alike (shared weights, a mean over the support axis), so the query's output does not
depend on their order and the supports' outputs are permuted with them.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def fold(supports: torch.Tensor) -> torch.Tensor:
    """[B, k, C, H, W] -> [B*k, C, H, W] (a view)."""
    return supports.flatten(0, 1)


def unfold(maps: torch.Tensor, batch: int) -> torch.Tensor:
    """[B*k, C, H, W] -> [B, k, C, H, W] (inverse of :func:`fold`)."""
    return maps.view(batch, -1, *maps.shape[1:])


def per_support(function, supports: torch.Tensor) -> torch.Tensor:
    """``function`` (of [N, C, H, W] maps) applied to every support of every sample."""
    return unfold(function(fold(supports)), supports.shape[0])


def init_conv(conv: nn.Conv2d, nonlinearity: str, negative_slope: float = 0.0) -> None:
    """Kaiming-normal weights (fan-in, gain of the following nonlinearity) and zero bias, as UniverSeg."""
    nn.init.kaiming_normal_(conv.weight, a=negative_slope, nonlinearity=nonlinearity)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class CrossConv(nn.Module):
    """z_j = conv([query ‖ support_j]) for every support j: one 3x3 convolution shared by all (query, support) pairs.

    query [B, Cq, H, W], supports [B, k, Cs, H, W] -> [B, k, Cout, H, W]. The weight is that of a single Conv2d over
    the Cq + Cs concatenated channels (query first, UniverSeg's parameters); since a convolution is linear in its
    input, it is evaluated as conv_q(query) + conv_s(support_j) + bias, the query's half once per sample instead of
    once per pair (same result, k times less work on that half, no repeated copy of the query).
    """

    def __init__(self, query_channels: int, support_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.query_channels = query_channels
        self.support_channels = support_channels
        self.conv = nn.Conv2d(query_channels + support_channels, out_channels, kernel_size, padding=kernel_size // 2)
        init_conv(self.conv, "linear")

    def forward(self, query: torch.Tensor, supports: torch.Tensor) -> torch.Tensor:
        weight = self.conv.weight
        padding = self.conv.padding
        from_query = F.conv2d(query, weight[:, :self.query_channels], self.conv.bias, padding=padding)
        from_supports = F.conv2d(fold(supports), weight[:, self.query_channels:], None, padding=padding)
        return unfold(from_supports, supports.shape[0]) + from_query.unsqueeze(1)


class ConvOp(nn.Sequential):
    """3x3 convolution (bias) + LeakyReLU, no normalisation (UniverSeg's ConvOp)."""

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float = 0.01):
        conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        init_conv(conv, "leaky_relu")
        super().__init__(conv, nn.LeakyReLU(negative_slope))


class CrossBlock(nn.Module):
    """(query, supports) -> (query', supports'): z = CrossConv(query, supports) (no activation);
    query' = ConvOp_q(mean_j z_j); supports'_j = ConvOp_s(z_j), the two ConvOps with their own weights.

    ``with_supports=False`` returns None for the supports (a last block whose supports nobody reads): its ConvOp_s
    still exists, so that the parameters are UniverSeg's, but it is frozen (``requires_grad=False``), as it never
    receives a gradient.
    """

    def __init__(self, query_channels: int, support_channels: int, width: int, negative_slope: float = 0.01,
                 with_supports: bool = True):
        super().__init__()
        self.cross = CrossConv(query_channels, support_channels, width)
        self.query_conv = ConvOp(width, width, negative_slope)
        self.support_conv = ConvOp(width, width, negative_slope)
        self.with_supports = with_supports
        if not with_supports:
            self.support_conv.requires_grad_(False)

    def forward(self, query: torch.Tensor, supports: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        pairs = self.cross(query, supports)
        query = self.query_conv(pairs.mean(dim=1))
        supports = per_support(self.support_conv, pairs) if self.with_supports else None
        return query, supports

"""Decoder of Sim-MPNet: per stage up-conv, channel + spatial attention fusion of the skip, DMW-LA, conv block.

Stages run from the deepest feature up; each returns a feature map that a head turns into logits (four outputs).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import SimMPNetConfig
from .dmwla import DMWLA


class ConvBlock(nn.Sequential):
    """Two 3x3 conv-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        )


class UpConv(nn.Module):
    """Nearest up-sampling to the skip's size, then 3x3 conv-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1),
                                  nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class ChannelAttention(nn.Module):
    """CBAM channel attention: a shared MLP on average- and max-pooled channels, sigmoid gate [B, C, 1, 1]."""

    def __init__(self, channels: int, reduction: int = SimMPNetConfig.channel_attention_reduction):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.ReLU(),
                                 nn.Conv2d(hidden, channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))


class SpatialAttention(nn.Module):
    """CBAM spatial attention: conv over channel mean and max, sigmoid gate [B, 1, H, W]."""

    def __init__(self, kernel_size: int = SimMPNetConfig.spatial_attention_kernel):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class DecoderStage(nn.Module):
    """Up-conv, attention-gated fusion with the skip, DMW-LA, conv block."""

    def __init__(self, in_channels: int, out_channels: int, spatial_attention: SpatialAttention,
                 channel_attention_reduction: int, **memory):
        super().__init__()
        self.up = UpConv(in_channels, out_channels)
        self.channel_attention = ChannelAttention(out_channels, channel_attention_reduction)
        self.spatial_attention = spatial_attention  # one module shared by all stages, as released
        self.memory_attention = DMWLA(out_channels, **memory)
        self.conv = ConvBlock(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x, skip.shape[-2:])
        fused = x + skip
        fused = self.channel_attention(fused) * fused
        fused = self.spatial_attention(fused) * fused
        return self.conv(self.memory_attention(x + fused))


class SimMPNetDecoder(nn.Module):
    """forward(deepest, skips) -> four feature maps, deepest first.

    `channels` lists the widths deepest first (e.g. 768, 384, 192, 96); `skips` the three shallower features in the
    same order.
    """

    def __init__(self, channels: list[int], num_k: int = SimMPNetConfig.decoder_num_k,
                 feature_dim: int = SimMPNetConfig.decoder_feature_dim, pool_size: int = SimMPNetConfig.pool_size,
                 warmup_iters: int = SimMPNetConfig.warmup_iters, pool_momentum: float = SimMPNetConfig.pool_momentum,
                 ema_momentum: float = SimMPNetConfig.ema_momentum,
                 channel_attention_reduction: int = SimMPNetConfig.channel_attention_reduction,
                 spatial_attention_kernel: int = SimMPNetConfig.spatial_attention_kernel,
                 fidelity: str = SimMPNetConfig.fidelity):
        super().__init__()
        memory = dict(num_k=num_k, feature_dim=feature_dim, pool_size=pool_size, warmup_iters=warmup_iters,
                      pool_momentum=pool_momentum, ema_momentum=ema_momentum, fidelity=fidelity)
        self.bottom_proj = nn.Conv2d(channels[0], channels[0], 1)
        self.bottom_memory_attention = DMWLA(channels[0], **memory)
        self.bottom_conv = ConvBlock(channels[0], channels[0])
        self.spatial_attention = SpatialAttention(spatial_attention_kernel)
        self.stages = nn.ModuleList(
            DecoderStage(c_in, c_out, self.spatial_attention, channel_attention_reduction, **memory)
            for c_in, c_out in zip(channels, channels[1:])
        )

    def forward(self, deepest: torch.Tensor, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        x = self.bottom_conv(self.bottom_memory_attention(self.bottom_proj(deepest)))
        outputs = [x]
        for stage, skip in zip(self.stages, skips):
            x = stage(x, skip)
            outputs.append(x)
        return outputs

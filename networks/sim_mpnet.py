"""Sim-MPNet: MaxViT encoder + DMW-LA memory encoder, summed stage features, DMW-LA decoder, four heads."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .config import (DECODER_FEATURE_DIM, DECODER_NUM_K, POOL_SIZE, SIZE_DIVISOR, WARMUP_ITERS, backbone_name)
from .decoder import SimMPNetDecoder
from .dmwla import DMWLA
from .layers import resize
from .maxvit_encoder import MaxViTEncoder
from .memory_encoder import MemoryEncoder

IMAGE_CHANNELS = 3


class SimMPNet(nn.Module):
    """forward(x [B, in_chans, H, W]) -> tuple of 4 logits [B, num_classes, img_size, img_size], deepest head first.

    in_chans 1 (CT/MRI): a learned 1x1 convolution + BatchNorm + ReLU maps the grey image to the backbone's three
    channels, as released; in_chans 3 (dermoscopy, microscopy): the RGB image goes in directly. At test time the four
    outputs are summed. `pretrained`: None loads pretrained_pth/maxvit/<released file> when present (else warns
    once), False starts from random weights, a path loads that file.
    """

    def __init__(self, num_classes: int = 9, img_size: int = 256, img_size_s2: int = 224, scale: str = "small",
                 num_k: int = 9, feature_dim: int = 256, pretrained: bool | str | Path | None = None, in_chans: int = 1,
                 warmup_iters: int = WARMUP_ITERS, pool_size: int = POOL_SIZE,
                 decoder_num_k: int = DECODER_NUM_K, decoder_feature_dim: int = DECODER_FEATURE_DIM):
        super().__init__()
        for name, size in (("img_size", img_size), ("img_size_s2", img_size_s2)):
            if size <= 0 or size % SIZE_DIVISOR:
                raise ValueError(f"{name} must be a positive multiple of {SIZE_DIVISOR}, got {size}")
        if in_chans not in (1, IMAGE_CHANNELS):
            raise ValueError(f"in_chans must be 1 (grey) or {IMAGE_CHANNELS} (RGB), got {in_chans}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}")
        self.config = dict(num_classes=num_classes, in_chans=in_chans, img_size=img_size, img_size_s2=img_size_s2,
                           scale=scale, num_k=num_k, feature_dim=feature_dim, warmup_iters=warmup_iters,
                           pool_size=pool_size, decoder_num_k=decoder_num_k, decoder_feature_dim=decoder_feature_dim)
        self.num_classes, self.in_chans, self.img_size, self.img_size_s2 = num_classes, in_chans, img_size, img_size_s2

        self.gray_to_rgb = None
        if in_chans == 1:
            self.gray_to_rgb = nn.Sequential(nn.Conv2d(1, IMAGE_CHANNELS, 1), nn.BatchNorm2d(IMAGE_CHANNELS),
                                             nn.ReLU(inplace=True))
        self.encoder1 = MaxViTEncoder(backbone_name(scale, img_size), img_size, pretrained)
        widths = self.encoder1.widths
        self.encoder2 = MemoryEncoder(widths, num_k, feature_dim, pool_size, warmup_iters)
        deepest_first = widths[::-1]
        self.decoder = SimMPNetDecoder(deepest_first, decoder_num_k, decoder_feature_dim, pool_size, warmup_iters)
        self.heads = nn.ModuleList(nn.Conv2d(width, num_classes, 1) for width in deepest_first)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected input [B, {self.in_chans}, H, W], got {tuple(x.shape)}")
        if self.gray_to_rgb is not None:
            x = self.gray_to_rgb(x)
        size = (self.img_size, self.img_size)
        x = resize(x, size)
        features1, gate = self.encoder1(x)
        gated = x * gate
        features2 = self.encoder2(resize(gated, (self.img_size_s2, self.img_size_s2)), gated)
        fused = [f2 + resize(f1, f2.shape[-2:]) for f1, f2 in zip(features1, features2)]
        maps = self.decoder(fused[-1], fused[-2::-1])
        return tuple(resize(head(feature), size) for head, feature in zip(self.heads, maps))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute encoder 1's MaxViT blocks in backward instead of storing their activations (see MaxViTEncoder).

        Only encoder 1: the DMW-LA blocks write their memory banks during the forward, which a recomputation would
        repeat.
        """
        self.encoder1.grad_checkpointing = bool(enable)

    # ----- memory --------------------------------------------------------------------------------------------------
    def memory_layers(self) -> list[DMWLA]:
        return [module for module in self.modules() if isinstance(module, DMWLA)]

    def set_memory_k(self, k: int) -> None:
        """Set W-LD's K (columns replaced per cluster and update) in every DMW-LA layer."""
        for layer in self.memory_layers():
            layer.set_k(k)

    @property
    def memory_k(self) -> int:
        return self.memory_layers()[0]._k

    @property
    def pool_size(self) -> int:
        return self.config["pool_size"]

    @property
    def in_warmup(self) -> bool:
        return any(layer.in_warmup for layer in self.memory_layers())

"""Encoder 2: overlapping patch embeddings and DMW-LA stages, with DS-GIM after each stage-3 DMW-LA."""
from __future__ import annotations

import torch
import torch.nn as nn

from .config import DSGIM_STAGE, PATCH_EMBEDS, STAGE_DEPTHS, dsgim_decay
from .dmwla import DMWLA
from .dsgim import DSGIM
from .layers import ImageInjection, OverlapPatchEmbed


class MemoryEncoder(nn.Module):
    """forward(image, reference) -> four stage features.

    `image` is the gated input at encoder 2's size; `reference` is the gated input at full size, re-injected after every
    stage (as released).
    """

    def __init__(self, widths: list[int], num_k: int, feature_dim: int, pool_size: int, warmup_iters: int,
                 depths: tuple[int, ...] = STAGE_DEPTHS, in_channels: int = 3):
        super().__init__()
        memory = dict(num_k=num_k, feature_dim=feature_dim, pool_size=pool_size, warmup_iters=warmup_iters)
        inputs = [in_channels, *widths[:-1]]
        self.embeds = nn.ModuleList(OverlapPatchEmbed(c_in, c_out, *spec)
                                    for c_in, c_out, spec in zip(inputs, widths, PATCH_EMBEDS))
        self.stages = nn.ModuleList(nn.ModuleList(DMWLA(width, **memory) for _ in range(depth))
                                    for width, depth in zip(widths, depths))
        # one DS-GIM shared by the stage's blocks (as released); block i uses the i-th decay coefficient
        self.dsgim = DSGIM(widths[DSGIM_STAGE])
        self.decays = [dsgim_decay(i) for i in range(depths[DSGIM_STAGE])]
        self.injections = nn.ModuleList(ImageInjection(width, in_channels) for width in widths)

    def forward(self, image: torch.Tensor, reference: torch.Tensor) -> list[torch.Tensor]:
        x = image
        features = []
        for index, (embed, blocks, injection) in enumerate(zip(self.embeds, self.stages, self.injections)):
            x = embed(x)
            for block_index, block in enumerate(blocks):
                x = block(x)
                if index == DSGIM_STAGE:
                    x = self.dsgim(x, self.decays[block_index])
            x = injection(x, reference)
            features.append(x)
        return features

"""Encoder 2: overlapping patch embeddings and DMW-LA stages, with DS-GIM after each stage-3 DMW-LA."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..shared.layers import ImageInjection, OverlapPatchEmbed
from .config import SimMPNetConfig, dsgim_decay
from .dmwla import DMWLA
from .dsgim import DSGIM


class MemoryEncoder(nn.Module):
    """forward(image, reference) -> four stage features.

    `image` is the gated input at encoder 2's size; `reference` is the gated input at full size, re-injected after every
    stage (as released). Depths, patch embeddings, the DS-GIM stage and the memory settings come from `config`.
    """

    def __init__(self, widths: list[int], config: SimMPNetConfig, in_channels: int = 3):
        super().__init__()
        memory = dict(num_k=config.num_k, feature_dim=config.feature_dim, pool_size=config.pool_size,
                      warmup_iters=config.warmup_iters, pool_momentum=config.pool_momentum,
                      ema_momentum=config.ema_momentum, fidelity=config.fidelity)
        inputs = [in_channels, *widths[:-1]]
        self.embeds = nn.ModuleList(OverlapPatchEmbed(c_in, c_out, *spec)
                                    for c_in, c_out, spec in zip(inputs, widths, config.patch_embeds))
        self.stages = nn.ModuleList(nn.ModuleList(DMWLA(width, **memory) for _ in range(depth))
                                    for width, depth in zip(widths, config.stage_depths))
        # one DS-GIM shared by the stage's blocks (as released); block i uses the i-th decay coefficient (release
        # fidelity: none - the release's integer mask truncates it to 0, see DSGIM). Paper fidelity: each block's call
        # normalises with its own BatchNorm statistics (DSGIM `sites`); the release keeps one set for all six.
        self.dsgim_stage = config.dsgim_stage
        depth = config.stage_depths[self.dsgim_stage]
        sites = 1 if config.fidelity == "release" else depth
        self.dsgim = DSGIM(widths[self.dsgim_stage], config.dsgim_selected_windows, config.fidelity, sites)
        self.decays = [dsgim_decay(i, config.dsgim_decay_layers) for i in range(depth)]
        self.injections = nn.ModuleList(ImageInjection(width, in_channels) for width in widths)

    def forward(self, image: torch.Tensor, reference: torch.Tensor) -> list[torch.Tensor]:
        x = image
        features = []
        for index, (embed, blocks, injection) in enumerate(zip(self.embeds, self.stages, self.injections)):
            x = embed(x)
            for block_index, block in enumerate(blocks):
                x = block(x)
                if index == self.dsgim_stage:
                    x = self.dsgim(x, self.decays[block_index], block_index)
            x = injection(x, reference)
            features.append(x)
        return features

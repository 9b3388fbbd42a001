"""Sim-MPNet: MaxViT encoder + DMW-LA memory encoder, summed stage features, DMW-LA decoder, four heads."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..base import SegmentationModel
from ..registry import cli_option
from ..shared.layers import resize
from .config import SimMPNetConfig, backbone_name
from .decoder import SimMPNetDecoder
from .dmwla import DMWLA
from .dsgim import DSGIM
from .maxvit_encoder import MaxViTEncoder
from .memory_encoder import MemoryEncoder
from .wld import next_memory_k

IMAGE_CHANNELS = 3


@dataclass(frozen=True)
class SimMPNetTrainOptions:
    """Sim-MPNet's own training schedule (command-line options of the training scripts)."""

    wld_start_epoch: int = field(default=100, metadata=cli_option("first epoch of W-LD's adaptive memory K",
                                                                  minimum=0))


class SimMPNet(SegmentationModel):
    """forward(x [B, in_chans, H, W]) -> tuple of 4 logits [B, num_classes, img_size, img_size], deepest head first.

    Built from a :class:`SimMPNetConfig` (``SimMPNet(config)``) or from its fields (``SimMPNet(num_classes=4, ...)``,
    the rest at the paper's values). in_chans 1 (CT/MRI): a learned 1x1 convolution + BatchNorm + ReLU maps the grey
    image to the backbone's three channels, as released; in_chans 3 (dermoscopy, microscopy): the RGB image goes in
    directly. At test time the four outputs are summed. `pretrained`: None loads pretrained_pth/maxvit/<released
    file> when present (else warns once), False starts from random weights, a path loads that file.

    ``config.fidelity == "release"`` computes what the authors' release computes (see DSGIM and DMWLA for the
    blocks); at the level of the network: W-LD's K applies to encoder 2's DMW-LA layers only (the decoder's keep
    K = M/2), K first changes after the first step of epoch ``wld_start_epoch + 1``, and from that epoch on the
    network trains with every normalisation and dropout layer in evaluation mode (the release evaluates on the test
    set after each epoch from ``wld_start_epoch`` on with ``model.eval()`` and never switches back), while the
    memory banks keep updating and DS-GIM keeps its training-batch masks.
    """

    arch = "sim_mpnet"  # the family's name when built directly (create_model records the registered name used)

    def __init__(self, config: SimMPNetConfig | None = None, *, pretrained: bool | str | Path | None = None,
                 **fields: Any):
        super().__init__()
        config = replace(config or SimMPNetConfig(), **fields)
        self.config = config
        self.train_options = SimMPNetTrainOptions()
        self._wld_previous_loss: float | None = None
        self._frozen_normalisation = False  # release fidelity, from epoch wld_start_epoch + 1 (see train())

        self.gray_to_rgb = None
        if config.in_chans == 1:
            self.gray_to_rgb = nn.Sequential(nn.Conv2d(1, IMAGE_CHANNELS, 1), nn.BatchNorm2d(IMAGE_CHANNELS),
                                             nn.ReLU(inplace=True))
        self.encoder1 = MaxViTEncoder(backbone_name(config.scale, config.img_size), config.img_size, pretrained)
        widths = self.encoder1.widths
        self.encoder2 = MemoryEncoder(widths, config)
        deepest_first = widths[::-1]
        self.decoder = SimMPNetDecoder(
            deepest_first, config.decoder_num_k, config.decoder_feature_dim, config.pool_size, config.warmup_iters,
            config.pool_momentum, config.ema_momentum, config.channel_attention_reduction,
            config.spatial_attention_kernel, config.fidelity)
        self.heads = nn.ModuleList(nn.Conv2d(width, config.num_classes, 1) for width in deepest_first)

    @property
    def img_size_s2(self) -> int:
        return self.config.img_size_s2

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

    @property
    def release_fidelity(self) -> bool:
        return self.config.fidelity == "release"

    def wld_layers(self) -> list[DMWLA]:
        """The DMW-LA layers whose K follows W-LD: all of them; release fidelity: encoder 2's only (the release's
        decoder holds its own K, which stays at M/2)."""
        return self.encoder2_memory_layers() if self.release_fidelity else self.memory_layers()

    def encoder2_memory_layers(self) -> list[DMWLA]:
        return [module for module in self.encoder2.modules() if isinstance(module, DMWLA)]

    def set_memory_k(self, k: int) -> None:
        """Set W-LD's K (columns replaced per cluster and update) in every DMW-LA layer that W-LD drives
        (`wld_layers`)."""
        for layer in self.wld_layers():
            layer.set_k(k)

    @property
    def memory_k(self) -> int:
        return self.wld_layers()[0]._k

    @property
    def pool_size(self) -> int:
        return self.config.pool_size

    @property
    def in_warmup(self) -> bool:
        return any(layer.in_warmup for layer in self.memory_layers())

    # ----- training hooks (networks.base) ---------------------------------------------------------------------------
    def start_training(self, options: SimMPNetTrainOptions | None = None) -> None:
        if self.config.warmup_iters < 1:
            raise ValueError(f"--warmup_iters must be at least 1, got {self.config.warmup_iters}: k-means structures "
                             "the memory bank after the last warm-up forward, so with none the bank would stay "
                             "random for the whole run")
        self.train_options = options or SimMPNetTrainOptions()

    def after_optimizer_step(self, epoch: int, first_step_of_epoch: bool, loss: float) -> None:
        """W-LD: record the loss at the first step of ``wld_start_epoch``; afterwards
        K = next_memory_k(previous_loss, loss, pool_size), set in every DMW-LA layer.

        Release fidelity, as its training loop: every step of ``wld_start_epoch`` records the loss; from the first
        step of the next epoch on, K = next_memory_k(previous_loss, loss, pool_size) in encoder 2's layers."""
        start = self.train_options.wld_start_epoch
        if epoch < start:
            return
        if self.release_fidelity:
            if epoch == start or self._wld_previous_loss is None:
                self._wld_previous_loss = loss
                return
        elif self._wld_previous_loss is None or (epoch == start and first_step_of_epoch):
            self._wld_previous_loss = loss
            return
        self.set_memory_k(next_memory_k(self._wld_previous_loss, loss, self.pool_size))
        self._wld_previous_loss = loss

    def before_epoch(self, epoch: int) -> None:
        """Release fidelity: from epoch ``wld_start_epoch + 1`` on, train with frozen normalisation (see train())."""
        self._frozen_normalisation = self.release_fidelity and epoch > self.train_options.wld_start_epoch

    def train(self, mode: bool = True) -> SimMPNet:
        """``nn.Module.train``; while the release's eval-mode training applies (`before_epoch`), every submodule but
        the DMW-LA layers, DS-GIM and encoder 1's wrapper is put in evaluation mode: BatchNorm uses and keeps its
        running statistics, dropout and drop path are off (as in the release's ``model.eval()``), while the memory
        banks keep updating and DS-GIM keeps its training-batch masks (the release's blocks ignore the mode)."""
        super().train(mode)
        if mode and self._frozen_normalisation:
            keep = (DMWLA, DSGIM, MaxViTEncoder)  # their `training` means "a training forward" here, nothing else
            for module in self.modules():
                if module is not self and not isinstance(module, keep):
                    module.training = False
        return self

    def log_scalars(self) -> dict[str, float]:
        return {"wld/memory_k": self.memory_k}

    def extra_state(self) -> dict[str, Any]:
        return {"wld_previous_loss": self._wld_previous_loss}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        previous = state.get("wld_previous_loss")
        self._wld_previous_loss = None if previous is None else float(previous)

    @property
    def first_selection_epoch(self) -> int:
        return self.train_options.wld_start_epoch

    def after_replicas_synchronised(self) -> None:
        for layer in self.memory_layers():
            layer.read_counters()

    def upgrade_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Checkpoints older than the per-layer warm-up seeds lack ``*.sampling_seed``: take this model's own (they
        only seed warm-up sampling, which an evaluation never runs)."""
        own = self.state_dict()
        for key in own:
            if key.endswith(".sampling_seed") and key not in state:
                state[key] = own[key]
        return state

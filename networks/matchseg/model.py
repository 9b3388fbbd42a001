"""MatchSeg / UniverSeg as a :class:`~networks.base.SegmentationModel`: a CrossBlock U-Net over a query and its
support set, with optional Joint Attention.

The engine hands a batch dict to :meth:`MatchSeg.forward_batch`; besides ``image`` [B, C, H, W] it must hold the
query's support set, ``support_images`` [B, k, C, H, W] and ``support_labels`` [B, k, H, W] (class indices; any
k >= 1, the same for every sample of the batch), which a data set with support selection supplies.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from datasets.episodes.keys import SUPPORT_IMAGES, SUPPORT_LABELS

from ..base import SegmentationModel
from .blocks import CrossBlock, init_conv, per_support
from .config import MatchSegConfig
from .joint_attention import JointAttention
from .loss import DiceBCEFocalLoss
from .universeg_weights import load_universeg_weights


class MatchSeg(SegmentationModel):
    """forward(image [B, C, H, W], support_images [B, k, C, H, W], support_labels [B, k, H, W]) -> logits
    [B, num_classes, H, W] = (0, z_1, ..., z_{C-1}).

    Supports enter the first block as their image and one binary mask channel per foreground class (one for a
    binary task, as UniverSeg). Encoder: a CrossBlock per width, max-pooling (2) of query and supports after every
    block but the last; decoder: bilinear x2 upsampling (align_corners=True) of query and supports, concatenation
    of the encoder's skip maps, CrossBlock; head: 1x1 convolution of the query to one logit per foreground class.
    Joint Attention (when on) follows the blocks that ``config.ja_encoder_levels`` / ``ja_decoder_levels`` name.
    """

    def __init__(self, config: MatchSegConfig, *, pretrained=None, strict_pretrained: bool = False):
        """``pretrained``: None / False = random initialisation (there is no default file); a path = a local
        UniverSeg weights file (:mod:`.universeg_weights`), loaded whole when ``strict_pretrained`` (UniverSeg's
        own architecture) and otherwise where the shapes agree, with a warning naming what was not loaded."""
        super().__init__()
        if pretrained is True:
            raise ValueError(f"{type(self).__name__}: pretrained=True would download UniverSeg's weights; give the "
                             f"path of a local file (e.g. universeg_v1_nf64_ss64_STA.pt)")
        self.config = config
        widths, decoder_widths = config.widths, config.decoder_widths
        ja_encoder, ja_decoder = config.ja_encoder_levels(), config.ja_decoder_levels()
        # the supports of the last block are read only by a Joint Attention after it
        last_supports_used = bool(ja_decoder[-1]) if decoder_widths else bool(ja_encoder[-1])

        def joint_attention(channels: int, on: bool, update_supports: bool = True) -> nn.Module | None:
            if not on:
                return None
            return JointAttention(channels, config.ja_reduction, config.ja_min_dim, update_supports)

        slope = config.negative_slope
        self.encoder = nn.ModuleList()
        self.encoder_attention = nn.ModuleList()
        query_in, support_in = config.in_chans, config.support_channels
        for level, width in enumerate(widths):
            last = level == len(widths) - 1 and not decoder_widths
            self.encoder.append(CrossBlock(query_in, support_in, width, slope,
                                           with_supports=not last or last_supports_used))
            self.encoder_attention.append(_optional(joint_attention(width, ja_encoder[level], not last)))
            query_in = support_in = width
        self.decoder = nn.ModuleList()
        self.decoder_attention = nn.ModuleList()
        skips = list(reversed(widths[:-1]))
        for level, (width, skip) in enumerate(zip(decoder_widths, skips)):
            last = level == len(decoder_widths) - 1
            self.decoder.append(CrossBlock(query_in + skip, support_in + skip, width, slope,
                                           with_supports=not last or last_supports_used))
            self.decoder_attention.append(_optional(joint_attention(width, ja_decoder[level], not last)))
            query_in = support_in = width
        self.head = nn.Conv2d(query_in, config.num_classes - 1, 1)
        init_conv(self.head, "linear")
        self.grad_checkpointing = False
        if pretrained not in (None, False):
            load_universeg_weights(self, pretrained, strict=strict_pretrained)

    # ----- engine contract ---------------------------------------------------------------------------------------
    @property
    def input_normalization(self) -> str | None:
        return None if self.config.input_norm == "dataset" else self.config.input_norm

    def forward_batch(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits of ``batch["image"]`` given ``batch["support_images"]`` and ``batch["support_labels"]``."""
        missing = [key for key in (SUPPORT_IMAGES, SUPPORT_LABELS) if batch.get(key) is None]
        if missing:
            raise ValueError(self._no_supports_message(f"the batch has no {' / '.join(missing)}"))
        return self(batch["image"], batch[SUPPORT_IMAGES], batch[SUPPORT_LABELS])

    def default_loss(self, global_batch: bool = False) -> nn.Module:
        """Dice + BCE + Focal (1:1:1, focal alpha 0.25, gamma 2) on the foreground logits (spec section 5).
        Every term is a mean over equally sized per-rank batches, so data-parallel gradient averaging already gives
        the global batch's loss: ``global_batch`` changes nothing."""
        return DiceBCEFocalLoss(self.num_classes)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every level (CrossBlock + Joint Attention) in backward instead of storing its activations."""
        self.grad_checkpointing = enable

    def example_context(self, image: torch.Tensor, shots: int = 8) -> dict[str, torch.Tensor]:
        """Batch keys for a forward of ``image`` without data (summaries, FLOP counts, benchmarks): ``shots`` blank
        supports (zero images, background labels) of the image's size."""
        batch, _, height, width = image.shape
        return {SUPPORT_IMAGES: image.new_zeros(batch, shots, self.in_chans, height, width),
                SUPPORT_LABELS: torch.zeros(batch, shots, height, width, dtype=torch.long, device=image.device)}

    # ----- network -----------------------------------------------------------------------------------------------
    def forward(self, image: torch.Tensor, support_images: torch.Tensor | None = None,
                support_labels: torch.Tensor | None = None) -> torch.Tensor:
        if support_images is None or support_labels is None:
            raise ValueError(self._no_supports_message("it was called without support_images / support_labels"))
        self._check_inputs(image, support_images, support_labels)
        classes = torch.arange(1, self.num_classes, device=support_labels.device)
        masks = (support_labels.unsqueeze(2) == classes.view(1, 1, -1, 1, 1)).to(support_images.dtype)
        query, supports = image, torch.cat([support_images, masks], dim=2)

        skips = []
        for level, (block, joint) in enumerate(zip(self.encoder, self.encoder_attention)):
            query, supports = self._level(block, joint, query, supports)
            if level < len(self.encoder) - 1:
                skips.append((query, supports))
                query = F.max_pool2d(query, 2)
                supports = per_support(lambda maps: F.max_pool2d(maps, 2), supports)
        for block, joint in zip(self.decoder, self.decoder_attention):
            skip_query, skip_supports = skips.pop()
            query = torch.cat([_upsample(query), skip_query], dim=1)
            supports = torch.cat([per_support(_upsample, supports), skip_supports], dim=2)
            query, supports = self._level(block, joint, query, supports)
        foreground = self.head(query)
        return torch.cat([torch.zeros_like(foreground[:, :1]), foreground], dim=1)

    def _level(self, block: CrossBlock, joint: nn.Module, query: torch.Tensor,
               supports: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One level: CrossBlock, then Joint Attention where placed (recomputed in backward with checkpointing)."""
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(_run_level, block, joint, query, supports, use_reentrant=False)
        return _run_level(block, joint, query, supports)

    def _no_supports_message(self, detail: str) -> str:
        return (f"{self.arch or type(self).__name__} segments a query against a support set, but {detail}: "
                f"pass {SUPPORT_IMAGES} [B, k, C, H, W] and {SUPPORT_LABELS} [B, k, H, W] in the batch "
                f"(a data set with support selection, e.g. --support_size k)")

    def _check_inputs(self, image: torch.Tensor, support_images: torch.Tensor, support_labels: torch.Tensor) -> None:
        name = self.arch or type(self).__name__
        channels, divisor = self.in_chans, self.config.size_divisor
        if image.ndim != 4 or image.shape[1] != channels:
            raise ValueError(f"{name}: expected image [B, {channels}, H, W], got {tuple(image.shape)}")
        batch, _, height, width = image.shape
        if height % divisor or width % divisor:
            raise ValueError(f"{name}: image height and width must be multiples of {divisor}, got ({height}, {width})")
        if support_images.ndim != 5 or support_images.shape[0] != batch or support_images.shape[1] < 1 \
                or support_images.shape[2:] != (channels, height, width):
            raise ValueError(f"{name}: expected support_images [B={batch}, k>=1, {channels}, {height}, {width}] "
                             f"matching the image, got {tuple(support_images.shape)}")
        shots = support_images.shape[1]
        if tuple(support_labels.shape) != (batch, shots, height, width):
            raise ValueError(f"{name}: expected support_labels [B={batch}, k={shots}, {height}, {width}] (class "
                             f"indices, one mask per support image), got {tuple(support_labels.shape)}")
        if support_labels.is_floating_point() or support_labels.is_complex():
            raise ValueError(f"{name}: support_labels must hold class indices (an integer or bool tensor), got "
                             f"{support_labels.dtype}")


def _run_level(block: CrossBlock, joint: nn.Module, query: torch.Tensor,
               supports: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    query, supports = block(query, supports)
    if isinstance(joint, JointAttention):
        query, supports = joint(query, supports)
    return query, supports


def _optional(module: nn.Module | None) -> nn.Module:
    return nn.Identity() if module is None else module


def _upsample(maps: torch.Tensor) -> torch.Tensor:
    return F.interpolate(maps, scale_factor=2, mode="bilinear", align_corners=True)

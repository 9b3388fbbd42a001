"""MatchSeg (Huo et al., arXiv 2403.15901) and its UniverSeg backbone as a registered model family.

Registered names: ``matchseg`` (the spec's configuration: RGB, widths 64, Joint Attention on the <= 32x32 levels of
a 128 px input), ``matchseg_wide`` (widths 160, near the paper's 7.79 M parameters) and ``universeg`` (UniverSeg's
released architecture: grey, widths 64, no Joint Attention, 1,182,785 parameters). The models segment a query
against a support set that the batch carries (``support_images`` / ``support_labels``, see :mod:`.model`).
"""
from __future__ import annotations

from ..registry import register_model
from .blocks import CrossBlock, CrossConv
from .config import PRESETS, MatchSegConfig
from .joint_attention import JointAttention
from .loss import DiceBCEFocalLoss
from .model import SUPPORT_IMAGES, SUPPORT_LABELS, MatchSeg

SUPPORT_SET = "support_set"  # the batch context (datasets.support_sets): k support pairs per query


@register_model(config=MatchSegConfig, preset=PRESETS["matchseg"], context=SUPPORT_SET)
def matchseg(config: MatchSegConfig, pretrained=None) -> MatchSeg:
    """MatchSeg: UniverSeg-style CrossBlock U-Net with Joint Attention (RGB, widths 64, 128 px)."""
    return MatchSeg(config, pretrained=pretrained)


@register_model(config=MatchSegConfig, preset=PRESETS["matchseg_wide"], context=SUPPORT_SET)
def matchseg_wide(config: MatchSegConfig, pretrained=None) -> MatchSeg:
    """MatchSeg with widths 160 (near the paper's 7.79 M parameters)."""
    return MatchSeg(config, pretrained=pretrained)


@register_model(config=MatchSegConfig, preset=PRESETS["universeg"], context=SUPPORT_SET)
def universeg(config: MatchSegConfig, pretrained=None) -> MatchSeg:
    """UniverSeg (Butoi et al. 2023), the released architecture: grey, widths 64, no Joint Attention."""
    return MatchSeg(config, pretrained=pretrained)


__all__ = ["MatchSeg", "MatchSegConfig", "PRESETS", "CrossConv", "CrossBlock", "JointAttention",
           "DiceBCEFocalLoss", "SUPPORT_IMAGES", "SUPPORT_LABELS"]

"""MatchSeg (Huo et al., arXiv 2403.15901) and its UniverSeg backbone as a registered model family.

Registered names: ``matchseg`` (the spec's configuration: RGB, widths 64, Joint Attention on the <= 32x32 levels of
a 128 px input), ``matchseg_wide`` (widths 160, near the paper's 7.79 M parameters) and ``universeg`` (UniverSeg's
released architecture: grey, widths 64, no Joint Attention, 1,182,785 parameters). The models segment a query
against a support set that the batch carries (``support_images`` / ``support_labels``, see :mod:`.model`).
"""
from __future__ import annotations

from datasets.episodes.keys import SUPPORT_SET  # the batch context: k support pairs per query

from ..recipe import TrainingRecipe
from ..registry import register_model, register_weights_importer
from .blocks import CrossBlock, CrossConv
from .config import PRESETS, MatchSegConfig
from .joint_attention import JointAttention
from .loss import DiceBCEFocalLoss
from .model import SUPPORT_IMAGES, SUPPORT_LABELS, MatchSeg
from .universeg_import import universeg_checkpoint
from .universeg_weights import is_universeg_state
# The specification's recipe (section 6): Adam lr 1e-4 (no weight decay named: torch's 0), cosine decay, batch 8,
# at most 200 epochs, early stop on validation DSC with patience 30.
RECIPE = TrainingRecipe(optimizer="adam", base_lr=1e-4, weight_decay=0.0, lr_schedule="cosine", batch_size=8,
                        max_epochs=200, early_stop_patience=30)


@register_model(config=MatchSegConfig, preset=PRESETS["matchseg"], context=SUPPORT_SET, recipe=RECIPE)
def matchseg(config: MatchSegConfig, pretrained=None) -> MatchSeg:
    """MatchSeg: UniverSeg-style CrossBlock U-Net with Joint Attention (RGB, widths 64, 128 px)."""
    return MatchSeg(config, pretrained=pretrained)


@register_model(config=MatchSegConfig, preset=PRESETS["matchseg_wide"], context=SUPPORT_SET, recipe=RECIPE)
def matchseg_wide(config: MatchSegConfig, pretrained=None) -> MatchSeg:
    """MatchSeg with widths 160 (near the paper's 7.79 M parameters)."""
    return MatchSeg(config, pretrained=pretrained)


@register_model(config=MatchSegConfig, preset=PRESETS["universeg"], context=SUPPORT_SET, recipe=RECIPE)
def universeg(config: MatchSegConfig, pretrained=None) -> MatchSeg:
    """UniverSeg (Butoi et al. 2023), the released architecture: grey, widths 64, no Joint Attention."""
    return MatchSeg(config, pretrained=pretrained, strict_pretrained=True)


# a bare UniverSeg state_dict (e.g. the released universeg_v1_nf64_ss64_STA.pt) is a `universeg` checkpoint
register_weights_importer("universeg", is_universeg_state, universeg_checkpoint, arch="universeg")


__all__ = ["MatchSeg", "MatchSegConfig", "PRESETS", "CrossConv", "CrossBlock", "JointAttention",
           "DiceBCEFocalLoss", "SUPPORT_IMAGES", "SUPPORT_LABELS"]

"""MatchSeg's training loss: soft Dice + binary cross-entropy + focal loss on the foreground logits.

The paper names the three terms but not their weights; the spec's recommendation (section 5) is used: 1:1:1, focal
alpha 0.25 and gamma 2 with torchvision's ``sigmoid_focal_loss`` semantics (mean), soft Dice per image on sigmoid
probabilities with smoothing 1, averaged over the batch. With more than two classes each foreground class is a
one-vs-rest binary task (one logit per class) and the terms are averaged over the classes too.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["DiceBCEFocalLoss", "soft_dice_loss", "sigmoid_focal_loss"]


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - mean over images and channels of (2 sum(p t) + s) / (sum(p) + sum(t) + s), p = sigmoid(logits);
    logits and binary target [B, K, H, W]."""
    probs = torch.sigmoid(logits)
    dims = tuple(range(2, logits.dim()))
    dice = (2 * (probs * target).sum(dims) + smooth) / (probs.sum(dims) + target.sum(dims) + smooth)
    return 1 - dice.mean()


def sigmoid_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Mean of alpha_t (1 - p_t)^gamma BCE(logits, target) (Lin et al.; torchvision's sigmoid_focal_loss)."""
    probs = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = probs * target + (1 - probs) * (1 - target)
    loss = bce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.mean()


class DiceBCEFocalLoss(nn.Module):
    """loss(logits [B, C, H, W] = (background, foreground classes...), target [B, H, W] class indices) =
    dice_weight * SoftDice + bce_weight * BCE + focal_weight * Focal over the C - 1 foreground logits. Channel 0
    (MatchSeg's constant background logit) is ignored."""

    def __init__(self, num_classes: int = 2, dice_weight: float = 1.0, bce_weight: float = 1.0,
                 focal_weight: float = 1.0, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 smooth: float = 1.0):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}")
        self.num_classes = num_classes
        self.dice_weight, self.bce_weight, self.focal_weight = dice_weight, bce_weight, focal_weight
        self.focal_alpha, self.focal_gamma, self.smooth = focal_alpha, focal_gamma, smooth

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if not isinstance(outputs, torch.Tensor):
            if len(outputs) != 1:
                raise ValueError(f"expected one logits tensor, got {len(outputs)} heads")
            outputs = outputs[0]
        if outputs.dim() != 4 or outputs.shape[1] != self.num_classes:
            raise ValueError(f"expected logits [B, {self.num_classes}, H, W], got shape {tuple(outputs.shape)}")
        if tuple(target.shape) != (outputs.shape[0], *outputs.shape[2:]):
            raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(outputs.shape)}")
        logits = outputs[:, 1:]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32 under autocast
        classes = torch.arange(1, self.num_classes, device=target.device).view(1, -1, 1, 1)
        onehot = (target.unsqueeze(1) == classes).to(logits.dtype)
        return (self.dice_weight * soft_dice_loss(logits, onehot, self.smooth)
                + self.bce_weight * F.binary_cross_entropy_with_logits(logits, onehot)
                + self.focal_weight * sigmoid_focal_loss(logits, onehot, self.focal_alpha, self.focal_gamma))

"""Training losses: soft Dice (as released) and the multi-head CE + Dice sum over every subset of heads."""
from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .collectives import sum_over_ranks_with_grad

__all__ = ["DiceLoss", "MultiHeadLoss", "head_subsets"]

DICE_SMOOTH = 1e-5


def _one_hot(target: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, H, W] class indices -> [B, C, H, W] one-hot of ``dtype`` (broadcast compare, no loop over classes)."""
    classes = torch.arange(num_classes, device=target.device).view(1, num_classes, *([1] * (target.dim() - 1)))
    return (target.unsqueeze(1) == classes).to(dtype)


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Losses run in float32 under autocast, and in float64 for a float64 model."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _check_logits_and_target(logits: torch.Tensor, target: torch.Tensor, num_classes: int) -> None:
    if logits.dim() < 3 or logits.shape[1] != num_classes:
        raise ValueError(f"expected logits [B, {num_classes}, ...], got shape {tuple(logits.shape)}")
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)} "
                         f"(expected {tuple(logits.shape[:1] + logits.shape[2:])})")


class DiceLoss(nn.Module):
    """Soft Dice loss of the release: per class ``1 - (2 sum(p t) + s) / (sum(p^2) + sum(t^2) + s)``.

    Sums run over the whole batch and all pixels (not per image); the loss is the mean over classes,
    background included. ``p`` are softmax probabilities (or ``inputs`` as given when ``softmax=False``).
    Labels are assumed valid (the datasets check label ranges when loading). ``global_batch``: in a data-parallel
    run the sums also run over the batches of all ranks (with gradients), as for one process fed the global batch.
    """

    def __init__(self, num_classes: int, smooth: float = DICE_SMOOTH, global_batch: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.smooth = smooth
        self.global_batch = global_batch

    def forward(self, inputs: torch.Tensor, target: torch.Tensor, softmax: bool = True) -> torch.Tensor:
        """inputs: logits [B, C, H, W] (probabilities if ``softmax=False``); target: LongTensor [B, H, W]."""
        _check_logits_and_target(inputs, target, self.num_classes)
        probs = torch.softmax(_at_least_float32(inputs), dim=1) if softmax else _at_least_float32(inputs)
        return self.from_sums(dice_sums(probs, _one_hot(target, self.num_classes, probs.dtype)))

    def from_sums(self, sums: torch.Tensor) -> torch.Tensor:
        """The loss from ``dice_sums`` of this rank (summed over ranks here when ``global_batch``)."""
        if self.global_batch:
            sums = sum_over_ranks_with_grad(sums)
        intersection, denominator = sums
        dice = (2 * intersection + self.smooth) / (denominator + self.smooth)
        return (1 - dice).mean()


def dice_sums(probs: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
    """[2, C]: per class, sum(p t) and sum(p^2) + sum(t^2) over the batch and all pixels (t: one-hot target)."""
    reduce_dims = [0] + list(range(2, probs.dim()))
    return torch.stack([(probs * one_hot).sum(reduce_dims),
                        (probs * probs).sum(reduce_dims) + (one_hot * one_hot).sum(reduce_dims)])


def head_subsets(num_heads: int) -> list[tuple[int, ...]]:
    """Every non-empty subset of head indices, by size then lexicographically (15 for 4 heads)."""
    return [subset for size in range(1, num_heads + 1) for subset in combinations(range(num_heads), size)]


class MultiHeadLoss(nn.Module):
    """Deep-supervision loss of the release: for every non-empty subset S of the prediction heads,
    ``ce_weight * CE(sum_S logits) + dice_weight * Dice(sum_S logits)``, summed over the subsets."""

    def __init__(self, num_classes: int, ce_weight: float = 0.3, dice_weight: float = 0.7,
                 global_batch: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.dice = DiceLoss(num_classes, global_batch=global_batch)

    def forward(self, outputs: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """outputs: N logits tensors [B, C, H, W] (one per head), or one tensor (one head: the plain CE + Dice of
        a single-output network); target: LongTensor [B, H, W] -> scalar."""
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        if len(outputs) == 0:
            raise ValueError("outputs must be a logits tensor or a non-empty tuple/list of them, one per head")
        for logits in outputs:
            _check_logits_and_target(logits, target, self.num_classes)
        heads = [_at_least_float32(logits) for logits in outputs]
        one_hot = _one_hot(target, self.num_classes, heads[0].dtype)  # built once for the 15 subsets
        total = heads[0].new_zeros(())
        for subset in head_subsets(len(heads)):
            # Recomputed in backward rather than stored: each subset keeps ~5 full-size float32 maps alive otherwise
            # (about 3 GB for 15 subsets at the paper's batch of 20), and recomputing them is cheap elementwise work.
            cross_entropy, sums = checkpoint(self._subset_terms, target, one_hot, *(heads[i] for i in subset),
                                             use_reentrant=False)
            total = total + self.ce_weight * cross_entropy + self.dice_weight * self.dice.from_sums(sums)
        return total

    def _subset_terms(self, target: torch.Tensor, one_hot: torch.Tensor,
                      *heads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy and Dice sums of the summed logits of ``heads``."""
        logits = heads[0]
        for head in heads[1:]:
            logits = logits + head
        log_probs = F.log_softmax(logits, dim=1)
        cross_entropy = F.nll_loss(log_probs, target)  # == F.cross_entropy(logits, target)
        return cross_entropy, dice_sums(log_probs.exp(), one_hot)

"""The contract between a segmentation model and the engine (trainer, evaluator, inference, checkpoints).

The engine names no model: whatever a family does differently in training goes through these hooks (nnU-Net's
trainer hooks, not if/else on names). A family subclasses :class:`SegmentationModel`, keeps its frozen config
dataclass in ``self.config`` (with at least ``num_classes``, ``in_chans`` and ``img_size``) and overrides what it
needs:

* ``forward_batch(batch)``: the outputs of a batch dict (default: ``self(batch["image"])``); a support-set model
  reads its context (supports) from the same dict. Inference passes extra context the same way.
* ``default_loss(global_batch)``: the training criterion ``loss(outputs, labels)``.
* ``start_training(options)`` / ``after_optimizer_step(epoch, first_step_of_epoch, loss)``: the family's training
  options (the dataclass registered as ``train_options``, whose fields become command-line options) and its
  per-step update; ``before_epoch(epoch)``: called before each training epoch (before ``model.train()``).
* ``log_scalars()``: values logged every step (CSV column = the part after the last '/', TensorBoard tag = key).
* ``extra_state()`` / ``load_extra_state(state)``: Python state outside ``state_dict`` that a resumed run needs.
* ``set_grad_checkpointing(enable)``, ``after_replicas_synchronised()``, ``first_selection_epoch``,
  ``upgrade_state_dict(state)`` (weights of older checkpoints), ``example_context(image)`` (a data-free forward).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from .shared.losses import MultiHeadLoss


class SegmentationModel(nn.Module):
    """Base class of registered models; see the module docstring for the hooks."""

    #: Set by ``networks.registry.create_model``: the registered name a checkpoint records.
    arch: str = ""

    config: Any

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def in_chans(self) -> int:
        return self.config.in_chans

    @property
    def input_normalization(self) -> str | None:
        """How the network wants its input intensities: None = as the data set normalises them (every model so
        far), ``"unit"`` = [0, 1] per channel (e.g. UniverSeg's released weights). The engine converts the data
        set's images to this, and to the model's channel count (``in_chans`` 1 on a colour set: luma)."""
        return None

    @property
    def img_size(self) -> int:
        """Side of the square network input that the data pipeline resizes slices/images to."""
        return self.config.img_size

    # ----- batches ---------------------------------------------------------------------------------------------
    def forward_batch(self, batch: Mapping[str, torch.Tensor]) -> Any:
        """Outputs of one batch dict (``image`` [B, C, H, W] plus any context the family reads)."""
        return self(batch["image"])

    # ----- training hooks --------------------------------------------------------------------------------------
    def default_loss(self, global_batch: bool = False) -> nn.Module:
        """0.3 CE + 0.7 Dice (summed over every subset of heads when there are several): the release's loss, so
        that baselines train with the same objective as Sim-MPNet."""
        return MultiHeadLoss(self.num_classes, global_batch=global_batch)

    def start_training(self, options: Any = None) -> None:
        """Receive the family's training options (an instance of its registered ``train_options``) before training."""

    def after_optimizer_step(self, epoch: int, first_step_of_epoch: bool, loss: float) -> None:
        """Called after every optimizer step with the global batch's loss."""

    def before_epoch(self, epoch: int) -> None:
        """Called at the start of every training epoch (0-based), before the trainer calls ``train()``; also for the
        first epoch of a resumed run."""

    def log_scalars(self) -> dict[str, float]:
        """Scalars logged every step, e.g. ``{"wld/memory_k": 50}``."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Plain-Python state (ints, floats, None) outside ``state_dict`` that a resumed run needs."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`extra_state`."""

    @property
    def first_selection_epoch(self) -> int:
        """First epoch of ``--select_best_on_test`` (the release selects only once its memory schedule runs)."""
        return 0

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in backward; a family without support refuses it with a clear message."""
        if enable:
            raise ValueError(f"{self.arch or type(self).__name__} does not support --grad_checkpointing")

    def example_context(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Context entries of a batch for a data-free forward of ``image`` (model summary, FLOP count): blank
        supports for a support-set model; nothing by default."""
        return {}

    def upgrade_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A checkpoint's weights brought to this version of the family (older files); default: unchanged."""
        return state

    def after_replicas_synchronised(self) -> None:
        """Called once data-parallel replicas received rank 0's buffers (refresh Python mirrors of buffers)."""

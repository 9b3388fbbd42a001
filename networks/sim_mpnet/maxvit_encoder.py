"""Encoder 1: a timm MaxViT with the image re-injected after every stage and a sigmoid gate from its last stage."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path

import timm
import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ..shared.layers import ImageInjection, resize
from ..shared.logs import model_logger
from .config import PRETRAINED_DIR, PRETRAINED_FILES

logger = model_logger(__name__)
_warned_missing: set[str] = set()
# A full Sim-MPNet state dict of the release keeps its MaxViT under this prefix.
RELEASE_BACKBONE_PREFIX = "backbone1."


def default_pretrained_path(backbone: str) -> Path:
    return PRETRAINED_DIR / PRETRAINED_FILES[backbone]


def load_backbone_weights(backbone: nn.Module, name: str, path: str | Path) -> None:
    """Load a timm (or released) MaxViT checkpoint into `backbone` through timm's own reader and filter.

    Only the stem and stages are used; a file that lacks any of their tensors, or has them in other shapes, is
    another architecture and raises ValueError naming the file.
    """
    from timm.models import load_state_dict
    from timm.models.maxxvit import checkpoint_filter_fn

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: pretrained weights file not found")
    try:
        state = load_state_dict(str(path))
    except Exception as error:  # torch/pickle raise many types for a damaged file
        raise ValueError(f"{path}: cannot read checkpoint ({type(error).__name__}: {error})") from error
    if not any(k.startswith("stem.") for k in state) and any(k.startswith(RELEASE_BACKBONE_PREFIX) for k in state):
        state = {k[len(RELEASE_BACKBONE_PREFIX):]: v for k, v in state.items() if k.startswith(RELEASE_BACKBONE_PREFIX)}
    try:
        state = checkpoint_filter_fn(state, backbone)
    except Exception as error:
        raise ValueError(f"{path}: not a {name} checkpoint ({type(error).__name__}: {error})") from error
    wanted = {k: v for k, v in backbone.state_dict().items() if k.startswith(("stem.", "stages."))}
    missing = [k for k in wanted if k not in state]
    mismatched = [k for k in wanted if k in state and tuple(state[k].shape) != tuple(wanted[k].shape)]
    if missing or mismatched:
        example = (missing or mismatched)[0]
        raise ValueError(f"{path}: not a {name} checkpoint: {len(missing)} tensors missing, "
                         f"{len(mismatched)} of another shape (e.g. {example})")
    backbone.load_state_dict({k: state[k] for k in wanted}, strict=False)
    logger.info("loaded %s weights from %s", name, path)


def build_backbone(name: str, img_size: int, pretrained: bool | str | Path | None) -> nn.Module:
    """timm MaxViT `name` at `img_size`; weights per `pretrained` (None: the standard local file if present)."""
    backbone = timm.create_model(name, pretrained=False, img_size=img_size, num_classes=0)
    if pretrained is False:
        return backbone
    path = default_pretrained_path(name) if pretrained in (None, True) else Path(pretrained)
    if pretrained is None and not path.is_file():
        if name not in _warned_missing:
            _warned_missing.add(name)
            # one line (a run: console and log.txt; else stderr), not a Python warning beside it
            logger.warning("NO PRETRAINED WEIGHTS: %s not found, encoder 1 (%s) starts from random weights. To "
                           "reproduce the paper, fetch it on a machine with internet: python -m "
                           "networks.sim_mpnet.fetch_weights --backbone %s", path, name, name)
        return backbone
    load_backbone_weights(backbone, name, path)
    return backbone


@contextmanager
def frozen_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers of ``module`` normalise as usual but leave their running statistics untouched.

    Used while a checkpointed block is recomputed for backward: the forward already updated the statistics once.
    """
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in layers]
    try:
        for m in layers:
            m.momentum = 0.0  # running <- (1 - 0) * running + 0 * batch
        yield
    finally:
        for m, (momentum, tracked) in zip(layers, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)


def _checkpoint_contexts(block: nn.Module):
    return nullcontext(), frozen_batchnorm_statistics(block)


class MaxViTEncoder(nn.Module):
    """forward(image [B, 3, H, W]) -> (four stage features, gate [B, 1, H, W] in (0, 1)).

    With ``grad_checkpointing`` set, training keeps only the input of each MaxViT block for backward and recomputes
    the block there: at the paper's batch of 20 the MaxViT activations are about half of the training memory.
    Gradients and BatchNorm statistics are those of the plain forward; the cost is one more MaxViT forward per step.
    """

    def __init__(self, name: str, img_size: int, pretrained: bool | str | Path | None = None):
        super().__init__()
        backbone = build_backbone(name, img_size, pretrained)
        self.stem, self.stages = backbone.stem, backbone.stages  # the classifier head is not used
        self.widths = [info["num_chs"] for info in backbone.feature_info[1:]]
        self.injections = nn.ModuleList(ImageInjection(width) for width in self.widths)
        self.gate = nn.Conv2d(self.widths[-1], 1, 1)
        self.grad_checkpointing = False

    def forward(self, image: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.stem(image)
        features = []
        for stage, injection in zip(self.stages, self.injections):
            x = injection(self._run_stage(stage, x), image)
            features.append(x)
        gate = resize(torch.sigmoid(self.gate(x)), image.shape[-2:])
        return features, gate

    def _run_stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not (self.grad_checkpointing and self.training and torch.is_grad_enabled()):
            return stage(x)
        for block in stage.blocks:  # a timm MaxViT stage is its sequence of blocks
            x = checkpoint(block, x, use_reentrant=False, context_fn=partial(_checkpoint_contexts, block))
        return x

"""Sim-MPNet's configuration: every architecture number is a field of :class:`SimMPNetConfig`.

Values follow the paper and the authors' release (vpsg-research/Sim-MPNet, lib/networks.py and lib/decoders.py).
Named presets (``PRESETS``) and the per-data-set memory settings of the paper (``DATASET_SETTINGS``) live here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..registry import cli_option as _option

# --- encoder 1: timm MaxViT backbones by scale and input size -----------------------------------------------------
# `None` as size key: the backbone works at any size divisible by 32.
BACKBONES: dict[str, dict[int | None, str]] = {
    "pico": {None: "maxvit_rmlp_pico_rw_256"},
    "nano": {None: "maxvit_rmlp_nano_rw_256"},
    "tiny": {224: "maxvit_tiny_rw_224", 256: "maxvit_rmlp_tiny_rw_256"},
    "small": {224: "maxvit_rmlp_small_rw_224", 256: "maxxvit_rmlp_small_rw_256"},
}

# File names of the ImageNet weights as published by timm's author and used by the release.
PRETRAINED_FILES: dict[str, str] = {
    "maxvit_rmlp_pico_rw_256": "maxvit_rmlp_pico_rw_256_sw-8d82f2c6.pth",
    "maxvit_rmlp_nano_rw_256": "maxvit_rmlp_nano_rw_256_sw-c17bb0d6.pth",
    "maxvit_tiny_rw_224": "maxvit_tiny_rw_224_sw-7d0dffeb.pth",
    "maxvit_rmlp_tiny_rw_256": "maxvit_rmlp_tiny_rw_256_sw-bbef0ff5.pth",
    "maxvit_rmlp_small_rw_224": "maxvit_rmlp_small_rw_224_sw-6ef0ae4f.pth",
    "maxxvit_rmlp_small_rw_256": "maxxvit_rmlp_small_rw_256_sw-37e217ff.pth",
}

PRETRAINED_DIR = Path(__file__).resolve().parents[2] / "pretrained_pth" / "maxvit"

# MaxViT reduces the input by 32 and partitions its last stage into windows: sizes must divide by this.
SIZE_DIVISOR = 32


def backbone_name(scale: str, img_size: int) -> str:
    """timm model name of encoder 1 for a scale and input size (as released, plus pico/nano at any size)."""
    if scale not in BACKBONES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(BACKBONES)}")
    by_size = BACKBONES[scale]
    if None in by_size:
        return by_size[None]
    if img_size not in by_size:
        sizes = ", ".join(str(s) for s in by_size)
        raise ValueError(f"scale {scale!r} supports img_size {sizes} (the released backbones); got {img_size}")
    return by_size[img_size]


# `paper`: the method as the paper describes it (default); `release`: what the authors' released code computes.
FIDELITY_MODES = ("paper", "release")


# --- the configuration -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimMPNetConfig:
    """Architecture of one Sim-MPNet; saved in checkpoints (``asdict``) and rebuilt from them.

    Fields with ``help`` metadata are command-line options of the scripts (names of the authors' release).
    """

    num_classes: int = 9
    in_chans: int = 1
    scale: str = field(default="small", metadata=_option("MaxViT/DMW-LA size", choices=tuple(BACKBONES)))
    img_size: int = field(default=256, metadata=_option("input size of the network (multiple of 32)"))
    img_size_s2: int = field(default=224, metadata=_option("input size of the second encoder (multiple of 32)"))
    num_k: int = field(default=9, metadata=_option("memory clusters per DMW-LA layer"))
    feature_dim: int = field(default=256, metadata=_option("memory feature dimension"))
    pool_size: int = field(default=100, metadata=_option("memory columns per cluster (M)"))
    warmup_iters: int = field(default=2000, metadata=_option(
        "training forwards that fill the memory bank before k-means structures it (at least 1)"))
    fidelity: str = field(default="paper", metadata=_option(
        "paper: the method as the paper describes it; release: what the authors' released code computes (DS-GIM's "
        "integer masks, scikit-learn k-means, the extra warm-up forward, the release's W-LD timing, eval-mode "
        "training after the first in-training test; see docs/fidelity.md)", choices=FIDELITY_MODES))
    # the release's decoder DMW-LA layers use 10 clusters of 128-d features whatever the data set
    decoder_num_k: int = 10
    decoder_feature_dim: int = 128
    pool_momentum: float = 0.3  # weight of a new feature when W-LD replaces a column
    ema_momentum: float = 0.95  # momentum of the frozen copy phi_ema of phi
    # encoder 2: (kernel, stride, padding) of the four overlapping patch embeddings (SegFormer style), DMW-LA depths
    patch_embeds: tuple[tuple[int, int, int], ...] = ((7, 4, 3), (3, 2, 1), (3, 2, 1), (3, 2, 1))
    stage_depths: tuple[int, ...] = (2, 2, 6, 2)
    dsgim_stage: int = 2  # zero-based: DS-GIM follows every DMW-LA of the third stage
    dsgim_selected_windows: int = 2  # windows (of the 2x2 partition) that get the decay coefficient
    dsgim_decay_layers: int = 12  # the release computes its decay table for 12 layers
    channel_attention_reduction: int = 16
    spatial_attention_kernel: int = 7

    def __post_init__(self) -> None:
        for name in ("img_size", "img_size_s2"):
            size = getattr(self, name)
            if size <= 0 or size % SIZE_DIVISOR:
                raise ValueError(f"{name} must be a positive multiple of {SIZE_DIVISOR}, got {size}")
        if self.in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 (grey) or 3 (RGB), got {self.in_chans}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background included), got {self.num_classes}")
        if len(self.patch_embeds) != len(self.stage_depths) or not 0 <= self.dsgim_stage < len(self.stage_depths):
            raise ValueError("patch_embeds and stage_depths need one entry per stage, dsgim_stage one of them")
        if self.fidelity not in FIDELITY_MODES:
            raise ValueError(f"fidelity must be one of {', '.join(FIDELITY_MODES)}, got {self.fidelity!r}")
        backbone_name(self.scale, self.img_size)  # raises for an unknown scale or an unreleased size


# Named presets: the paper's small 256/224 configuration and the pico 64 configuration of the CPU demo.
PRESETS: dict[str, dict] = {
    "small": dict(scale="small", img_size=256, img_size_s2=224),
    "pico": dict(scale="pico", img_size=64, img_size_s2=64, pool_size=16, warmup_iters=20),
}

# Memory settings per data set (paper, Sec. 4.1 / release README). A data set without an entry gets
# num_k = its number of classes and the default feature_dim.
DATASET_SETTINGS: dict[str, dict[str, int]] = {
    "synapse": dict(num_k=9, feature_dim=256),
    "acdc": dict(num_k=4, feature_dim=128),
    "segpc2021": dict(num_k=3, feature_dim=256),
    "isic2018": dict(num_k=2, feature_dim=256),
}


def dataset_settings(dataset: str, num_classes: int | None) -> dict[str, int]:
    """num_k / feature_dim of a data set (the paper's table, else num_k = its number of classes)."""
    if dataset.lower() in DATASET_SETTINGS:
        return dict(DATASET_SETTINGS[dataset.lower()])
    return {} if num_classes is None else dict(num_k=num_classes)


def dsgim_decay(block_index: int, layers: int = SimMPNetConfig.dsgim_decay_layers) -> float:
    """Decay coefficient of the i-th stage-3 block: exp(-(0.25 - 2^(-2.5 - 5 i / layers)))."""
    return math.exp(-(0.25 - 2.0 ** (-2.5 - 5.0 * block_index / layers)))

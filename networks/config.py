"""Every architectural constant of Sim-MPNet in one place.

Values follow the paper and the authors' release (vpsg-research/Sim-MPNet, lib/networks.py and lib/decoders.py).
"""
from __future__ import annotations

import math
from pathlib import Path

# --- per-dataset constants (paper, Sec. 4.1 / release README) ---------------------------------------------------
DATASET_CONSTANTS: dict[str, dict[str, int]] = {
    "synapse": dict(num_classes=9, num_k=9, feature_dim=256),
    "acdc": dict(num_classes=4, num_k=4, feature_dim=128),
    "segpc2021": dict(num_classes=3, num_k=3, feature_dim=256),
    "isic2018": dict(num_classes=2, num_k=2, feature_dim=256),
}


def dataset_constants(name: str, **overrides) -> dict[str, int]:
    """num_classes / num_k / feature_dim of a data set; keyword overrides whose value is None are ignored."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in DATASET_CONSTANTS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASET_CONSTANTS)}")
    constants = dict(DATASET_CONSTANTS[key])
    unknown = set(overrides) - set(constants)
    if unknown:
        raise ValueError(f"unknown dataset constant(s): {', '.join(sorted(unknown))}")
    constants.update({k: v for k, v in overrides.items() if v is not None})
    return constants


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

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained_pth" / "maxvit"

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


# --- encoder 2: overlapping patch embeddings + DMW-LA stages --------------------------------------------------------
# (kernel, stride, padding) of the four overlapping patch embeddings (SegFormer style).
PATCH_EMBEDS: tuple[tuple[int, int, int], ...] = ((7, 4, 3), (3, 2, 1), (3, 2, 1), (3, 2, 1))
STAGE_DEPTHS: tuple[int, ...] = (2, 2, 6, 2)
DSGIM_STAGE = 2  # zero-based: DS-GIM follows every DMW-LA of the third stage
DSGIM_SELECTED_WINDOWS = 2  # windows (of the 2x2 partition) that get the decay coefficient
DSGIM_DECAY_LAYERS = 12  # the release computes its decay table for 12 layers


def dsgim_decay(block_index: int, layers: int = DSGIM_DECAY_LAYERS) -> float:
    """Decay coefficient of the i-th stage-3 block: exp(-(0.25 - 2^(-2.5 - 5 i / layers)))."""
    return math.exp(-(0.25 - 2.0 ** (-2.5 - 5.0 * block_index / layers)))


# --- DMW-LA memory ---------------------------------------------------------------------------------------------------
POOL_SIZE = 100  # M: memory columns per cluster
WARMUP_ITERS = 2000  # training forwards that fill the bank before k-means structures it
POOL_MOMENTUM = 0.3  # weight of a new feature when W-LD replaces a column
EMA_MOMENTUM = 0.95  # momentum of the frozen copy phi_ema of phi
DECODER_NUM_K = 10  # the release's decoder DMW-LA layers use 10 clusters of 128-d features
DECODER_FEATURE_DIM = 128

# --- decoder ---------------------------------------------------------------------------------------------------------
CHANNEL_ATTENTION_REDUCTION = 16
SPATIAL_ATTENTION_KERNEL = 7

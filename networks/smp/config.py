"""Configurations of the segmentation_models_pytorch (smp) baselines: one frozen dataclass per decoder kind.

:class:`SMPEncoderConfig` holds what every smp architecture shares (classes, channels, input size, encoder);
:class:`SMPUnetConfig` adds the U-Net / U-Net++ decoder, :class:`SMPFPNConfig` the FPN decoder. Defaults are smp's,
except ``num_classes`` / ``in_chans`` / ``img_size``, which match Sim-MPNet's so that the same data pipeline is used.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..registry import cli_option as _option

# smp's encoders produce 3 to 5 stages (each halves the resolution).
ENCODER_DEPTHS = (3, 4, 5)


@dataclass(frozen=True)
class SMPEncoderConfig:
    """Fields shared by every smp architecture; saved in checkpoints (``asdict``) and rebuilt from them."""

    num_classes: int = 9
    in_chans: int = 1
    img_size: int = field(default=256, metadata=_option("input size of the network (multiple of 32)"))
    encoder_name: str = field(default="resnet34", metadata=_option(
        "segmentation_models_pytorch encoder (resnet34, resnet50, efficientnet-b0, tu-<timm model>, ...); "
        "random initialisation unless --pretrained names a local encoder weights file"))
    encoder_depth: int = 5  # encoder stages; the input side must divide by 2 ** encoder_depth

    @property
    def size_divisor(self) -> int:
        """The input's height and width must be multiples of this (the encoder's total stride)."""
        return 2 ** self.encoder_depth

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background included), got {self.num_classes}")
        if self.in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {self.in_chans}")
        if self.encoder_depth not in ENCODER_DEPTHS:
            raise ValueError(f"encoder_depth must be one of {ENCODER_DEPTHS}, got {self.encoder_depth}")
        if self.img_size <= 0 or self.img_size % self.size_divisor:
            raise ValueError(f"img_size must be a positive multiple of {self.size_divisor} (2 ** encoder_depth, "
                             f"encoder_depth={self.encoder_depth}), got {self.img_size}")
        if not self.encoder_name:
            raise ValueError("encoder_name must not be empty")

    def decoder_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the smp architecture's constructor that describe its decoder."""
        return {}


@dataclass(frozen=True)
class SMPUnetConfig(SMPEncoderConfig):
    """U-Net and U-Net++ (smp.Unet, smp.UnetPlusPlus): one decoder block per encoder stage."""

    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)  # one per block, deepest first
    decoder_use_norm: bool | str = "batchnorm"  # smp: batchnorm, identity, layernorm, instancenorm, inplace, False
    decoder_attention_type: str | None = None  # smp: None or "scse"
    decoder_interpolation: str = "nearest"  # upsampling mode of the decoder blocks

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.decoder_channels) != self.encoder_depth or any(c <= 0 for c in self.decoder_channels):
            raise ValueError(f"decoder_channels needs one positive width per encoder stage "
                             f"(encoder_depth={self.encoder_depth}), got {self.decoder_channels}")

    def decoder_kwargs(self) -> dict[str, Any]:
        return dict(decoder_channels=tuple(self.decoder_channels), decoder_use_norm=self.decoder_use_norm,
                    decoder_attention_type=self.decoder_attention_type,
                    decoder_interpolation=self.decoder_interpolation)


@dataclass(frozen=True)
class SMPFPNConfig(SMPEncoderConfig):
    """Feature Pyramid Network (smp.FPN): predicts at 1/4 resolution, then upsamples by ``upsampling``."""

    decoder_pyramid_channels: int = 256
    decoder_segmentation_channels: int = 128
    decoder_merge_policy: str = "add"  # "add" or "cat"
    decoder_dropout: float = 0.2
    decoder_interpolation: str = "nearest"
    upsampling: int = 4

    def decoder_kwargs(self) -> dict[str, Any]:
        return dict(decoder_pyramid_channels=self.decoder_pyramid_channels,
                    decoder_segmentation_channels=self.decoder_segmentation_channels,
                    decoder_merge_policy=self.decoder_merge_policy, decoder_dropout=self.decoder_dropout,
                    decoder_interpolation=self.decoder_interpolation, upsampling=self.upsampling)

"""Baselines from segmentation_models_pytorch (smp) as registered model families.

Registered names: ``unet`` (smp.Unet), ``unetplusplus`` (smp.UnetPlusPlus), ``fpn`` (smp.FPN), each with a
ResNet-34 encoder by default and random initialisation (``encoder_weights=None``: nothing downloads); a local
encoder weights file can be given as ``pretrained``. Any field of the name's config class is an override:

    model = create_model("unet", num_classes=9, in_chans=1, img_size=256, encoder_name="resnet50")
"""
from __future__ import annotations

from ..recipe import RELEASE_RECIPE
from ..registry import register_model
from .config import SMPEncoderConfig, SMPFPNConfig, SMPUnetConfig
from .model import SMPModel, load_encoder_weights


@register_model(config=SMPUnetConfig, recipe=RELEASE_RECIPE)  # Sim-MPNet's: a fair comparison
def unet(config: SMPUnetConfig, pretrained=None) -> SMPModel:
    """U-Net (segmentation_models_pytorch), ResNet-34 encoder by default, random initialisation."""
    return SMPModel(config, "Unet", pretrained=pretrained)


@register_model(config=SMPUnetConfig, recipe=RELEASE_RECIPE)  # Sim-MPNet's: a fair comparison
def unetplusplus(config: SMPUnetConfig, pretrained=None) -> SMPModel:
    """U-Net++ (segmentation_models_pytorch), ResNet-34 encoder by default, random initialisation."""
    return SMPModel(config, "UnetPlusPlus", pretrained=pretrained)


@register_model(config=SMPFPNConfig, recipe=RELEASE_RECIPE)
def fpn(config: SMPFPNConfig, pretrained=None) -> SMPModel:
    """FPN (segmentation_models_pytorch), ResNet-34 encoder by default, random initialisation."""
    return SMPModel(config, "FPN", pretrained=pretrained)


__all__ = ["SMPModel", "SMPEncoderConfig", "SMPUnetConfig", "SMPFPNConfig", "load_encoder_weights"]

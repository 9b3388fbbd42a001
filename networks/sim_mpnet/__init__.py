"""Sim-MPNet (Tang et al., ICCV 2025) as a registered model family.

Registered names: ``sim_mpnet`` (the paper's small MaxViT at 256 px, encoder 2 at 224 px) and ``sim_mpnet_pico``
(the pico architecture of the CPU demo; it trains with the release's recipe, not the demo's options). Either takes
any field of :class:`SimMPNetConfig` as an override, and a data set name for the paper's per-data-set memory settings
(``DATASET_SETTINGS``).
"""
from __future__ import annotations

from ..recipe import RELEASE_RECIPE
from ..registry import register_checkpoint_upgrade, register_model
from .config import DATASET_SETTINGS, PRESETS, SimMPNetConfig, dataset_settings, dsgim_decay
from .dmwla import DMWLA
from .dsgim import DSGIM
from .legacy import FIRST_FORMAT, upgrade_first_format
from .model import SimMPNet, SimMPNetTrainOptions
from .wld import next_memory_k


@register_model(config=SimMPNetConfig, preset=PRESETS["small"], dataset_settings=dataset_settings,
                train_options=SimMPNetTrainOptions, recipe=RELEASE_RECIPE)
def sim_mpnet(config: SimMPNetConfig, pretrained=None) -> SimMPNet:
    """Sim-MPNet, the paper's configuration: MaxViT-small at 256 px, encoder 2 at 224 px."""
    return SimMPNet(config, pretrained=pretrained)


@register_model(config=SimMPNetConfig, preset=PRESETS["pico"], dataset_settings=dataset_settings,
                train_options=SimMPNetTrainOptions, recipe=RELEASE_RECIPE)
def sim_mpnet_pico(config: SimMPNetConfig, pretrained=None) -> SimMPNet:
    """Sim-MPNet at the CPU demo's size (MaxViT-pico, 64 px, 16 memory columns, 20 warm-up); the release's recipe."""
    return SimMPNet(config, pretrained=pretrained)


register_checkpoint_upgrade(FIRST_FORMAT, upgrade_first_format)

__all__ = ["SimMPNet", "SimMPNetConfig", "SimMPNetTrainOptions", "DMWLA", "DSGIM", "PRESETS", "DATASET_SETTINGS",
           "dataset_settings", "dsgim_decay", "next_memory_k"]

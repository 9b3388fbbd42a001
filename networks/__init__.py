"""Segmentation networks: a registry of model families (``create_model``, ``list_models``) and shared blocks.

    from networks import create_model, list_models
    model = create_model("sim_mpnet", dataset="synapse", num_classes=9, in_chans=1)

Each family lives in its own subpackage and registers its names on import: ``networks.sim_mpnet`` (Sim-MPNet)
and ``networks.smp`` (baselines from segmentation_models_pytorch). Blocks shared across families live in
``networks.shared``.
"""
from . import (
           sim_mpnet,  # noqa: F401  (registers the family)
           smp,  # noqa: F401  (registers the family)
)
from . import matchseg  # noqa: F401
from .base import SegmentationModel
from .registry import create_model, list_models, model_entry, register_model, unregister_model
from .shared.summary import format_summary, model_summary

__all__ = ["SegmentationModel", "create_model", "list_models", "model_entry", "register_model", "unregister_model",
           "model_summary", "format_summary"]

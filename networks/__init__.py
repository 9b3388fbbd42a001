"""Sim-MPNet network package: `from networks import SimMPNet, DMWLA, DSGIM`."""
from .config import DATASET_CONSTANTS, dataset_constants
from .dmwla import DMWLA
from .dsgim import DSGIM
from .sim_mpnet import SimMPNet
from .summary import format_summary, model_summary
from .wld import next_memory_k

__all__ = ["SimMPNet", "DMWLA", "DSGIM", "DATASET_CONSTANTS", "dataset_constants", "model_summary",
           "format_summary", "next_memory_k"]

"""Module helpers shared by the engine's inference and the families' analysis code (which imports no ``utils``): a
model's device, and evaluation mode with every submodule's own previous mode restored afterwards."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a model without parameters)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode, then restore each one's own previous mode (mixed modes included)."""
    previous = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in previous:
            module.training = training

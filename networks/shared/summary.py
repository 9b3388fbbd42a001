"""Model summary: parameter counts and FLOPs (PyTorch's own FlopCounterMode)."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def model_summary(model: nn.Module, img_size: int, in_chans: int | None = None) -> dict:
    """Parameters (all / trainable) and GFLOPs of one evaluation forward of a single image.

    The forward runs in eval mode, so no memory buffer changes; the model's mode is restored afterwards.
    ``in_chans`` defaults to the model's own (``model.in_chans``, else 1).
    """
    in_chans = in_chans or getattr(model, "in_chans", 1)
    parameter = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            image = torch.zeros(1, in_chans, img_size, img_size, device=parameter.device, dtype=parameter.dtype)
            if hasattr(model, "forward_batch"):  # a registered model, with the context it needs (e.g. supports)
                model.forward_batch({"image": image, **model.example_context(image)})
            else:
                model(image)
    finally:
        model.train(was_training)
    return dict(params=sum(p.numel() for p in model.parameters()),
                trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
                gflops=counter.get_total_flops() / 1e9)


def format_summary(summary: dict) -> str:
    return (f"parameters {summary['params'] / 1e6:.2f} M ({summary['trainable'] / 1e6:.2f} M trainable), "
            f"{summary['gflops']:.2f} GFLOPs per image")

"""The few collectives that keep the DMW-LA memory banks identical on every rank of a data-parallel run.

Each is the identity when no process group is initialised (or it has one member), so single-process code runs the
same path. Tensors must live on the device of the backend (CPU for gloo, CUDA for nccl), as the model's do.
"""
from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_autograd

# torch 2.9+ marks this autograd all_reduce deprecated for a private replacement; it works, and the warning (once per
# process, i.e. per torchrun rank) is nothing a user can act on.
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_reduce is deprecated",
                        category=FutureWarning)
_REDUCE_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX} if dist.is_available() else {}


def world_size() -> int:
    """Processes in the default group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place reduction ('sum' or 'max') over ranks; every rank receives the same result. Returns ``tensor``."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=_REDUCE_OPS[op])
    return tensor


def all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """``[world_size, *tensor.shape]``: every rank's tensor, in rank order. All ranks must pass the same shape."""
    if world_size() == 1:
        return tensor.unsqueeze(0)
    gathered = tensor.new_empty((world_size(), *tensor.shape))
    dist.all_gather(list(gathered.unbind(0)), tensor.contiguous())  # gloo has no all_gather_into_tensor
    return gathered


def broadcast(tensor: torch.Tensor, source: int = 0) -> torch.Tensor:
    """In place: every rank receives rank ``source``'s values. Returns ``tensor``."""
    if world_size() > 1:
        dist.broadcast(tensor, src=source)
    return tensor


def sum_over_ranks_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks that gradients flow through (each rank's inputs get the gradient of every rank's use)."""
    return dist_autograd.all_reduce(tensor) if world_size() > 1 else tensor

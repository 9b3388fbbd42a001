"""Data-parallel training with torchrun (DistributedDataParallel) on CPU (gloo) and CUDA (nccl).

``torchrun --nproc_per_node N train_<dataset>.py ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything
here is the single-process identity. The design keeps an N-process run equal (up to float rounding) to one process
fed the same global batches:

* ``--batch_size`` is the GLOBAL batch; rank r trains on the r-th contiguous block of every global batch
  (:class:`GlobalBatchSampler`), so the ranks' blocks concatenated in rank order are the single-process batch;
* BatchNorm statistics can be computed over the global batch (:class:`GlobalBatchNorm`, any device);
* the Dice loss sums over the global batch (``networks.shared.losses.DiceLoss(global_batch=True)``) and the
  model's after-step hook (Sim-MPNet: W-LD's K) sees the loss averaged over ranks;
* the DMW-LA memory is kept identical by the layers themselves (``networks.shared.collectives``), not by DDP's buffer
  broadcast, which is switched off.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from timm.layers import BatchNormAct2d
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from networks.shared import collectives
from networks.shared.collectives import sum_over_ranks_with_grad
from utils.inference import resolve_device

PROCESS_GROUP_TIMEOUT = timedelta(minutes=60)  # a rank may wait for rank 0 while it validates and writes checkpoints
_UINT8_WEIGHT_PERIOD = 65521  # checksum weights cycle through 1..65521 (largest prime below 2**16)


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run: rank, number of processes, GPU index on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    try:
        return default if text is None else int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is not an integer") from None


def setup_distributed(device_name: str) -> tuple[DistributedContext, torch.device]:
    """Join the torchrun process group (if launched by torchrun with more than one process) and pick the device.

    Under torchrun each rank uses ``cuda:LOCAL_RANK`` (--device auto or cuda) or the CPU (--device cpu); the backend
    is nccl for CUDA and gloo for the CPU.
    """
    context = DistributedContext(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
    if not context.enabled:
        return context, resolve_device(device_name)
    if device_name == "cpu" or (device_name == "auto" and not torch.cuda.is_available()):
        device = torch.device("cpu")
    elif device_name in ("auto", "cuda"):
        device = resolve_device(f"cuda:{context.local_rank}")
        torch.cuda.set_device(device)
    else:
        raise ValueError(f"--device {device_name} cannot be used with torchrun: each process takes the GPU of its "
                         "LOCAL_RANK (use --device auto, cuda or cpu)")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=context.rank,
                                world_size=context.world_size, timeout=PROCESS_GROUP_TIMEOUT)
    return context, device


def teardown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def mean_over_ranks(value: float, device: torch.device) -> float:
    """The average of a float over ranks (the float itself in a single process)."""
    if collectives.world_size() == 1:
        return value
    total = collectives.all_reduce(torch.tensor([value], dtype=torch.float64, device=device))
    return float(total.item()) / collectives.world_size()


def gather_objects(obj: object) -> list[object]:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` in a single process)."""
    if collectives.world_size() == 1:
        return [obj]
    gathered: list[object] = [None] * collectives.world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


# ----------------------------------------------------------------------------------------------------------------
# Global batches
# ----------------------------------------------------------------------------------------------------------------
def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Generator of an epoch's shuffle, a function of (seed, epoch) only."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Batch sampler: each epoch, a permutation seeded by (seed, epoch) is cut into global batches of
    ``global_batch`` items and this rank receives the ``rank``-th contiguous block of ``global_batch / world_size``.

    In one process this is exactly ``DataLoader(shuffle=True, generator=...)``'s batching. Across processes every
    rank takes the same number of steps: a last global batch too small to fill every rank equally is dropped (so is
    a last batch of one item of several when ``drop_singleton``: BatchNorm cannot train on it).
    ``drops_last`` says whether the incomplete last batch is dropped.
    """

    def __init__(self, num_items: int, global_batch: int, context: DistributedContext, seed: int,
                 drop_singleton: bool = False) -> None:
        if global_batch % context.world_size:
            raise ValueError(f"--batch_size {global_batch} (the global batch) must be divisible by the number of "
                             f"processes ({context.world_size})")
        self.num_items, self.global_batch, self.context = num_items, global_batch, context
        self.local_batch = global_batch // context.world_size
        self.seed, self.epoch = seed, 0
        remainder = num_items % global_batch
        self.drops_last = remainder > 0 and (context.enabled or (drop_singleton and remainder == 1 < global_batch))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[list[int]]:
        order = torch.randperm(self.num_items, generator=epoch_generator(self.seed, self.epoch)).tolist()
        batches = [order[start:start + self.global_batch] for start in range(0, self.num_items, self.global_batch)]
        if self.drops_last:
            batches.pop()
        return batches

    def __iter__(self):
        block = slice(self.context.rank * self.local_batch, (self.context.rank + 1) * self.local_batch)
        for batch in self._global_batches():
            yield batch[block] if self.context.enabled else batch

    def __len__(self) -> int:
        return len(self._global_batches())


# ----------------------------------------------------------------------------------------------------------------
# BatchNorm over the global batch
# ----------------------------------------------------------------------------------------------------------------
class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics cover the batches of all ranks, on any device (torch's SyncBatchNorm
    needs a GPU). One all-reduce of (sum, sum of squares, count) per forward, taken around the running mean for
    accuracy; gradients flow through it. Evaluation and single-process training are plain BatchNorm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and collectives.world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1, *([1] * (x.dim() - 2))]
        shift = (self.running_mean if self.running_mean is not None else x.new_zeros(x.shape[1])).detach().to(x.dtype)
        centred = x - shift.view(shape)
        count = x.new_full((1,), x.numel() // x.shape[1])
        stats = sum_over_ranks_with_grad(torch.cat([centred.sum(dims), (centred * centred).sum(dims), count]))
        channels = x.shape[1]
        total = stats[-1]
        offset = stats[:channels] / total
        variance = (stats[channels:2 * channels] / total - offset * offset).clamp(min=0)
        mean = shift + offset
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
                self.num_batches_tracked.add_(1)
                unbiased = variance * total / (total - 1).clamp(min=1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach().to(self.running_mean.dtype))
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach().to(self.running_var.dtype))
        normalised = (x - mean.view(shape)) * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            normalised = normalised * self.weight.view(shape) + self.bias.view(shape)
        return normalised


class GlobalBatchNormAct(GlobalBatchNorm):
    """GlobalBatchNorm followed by the dropout and activation of timm's BatchNormAct2d (the MaxViT's norms)."""

    def __init__(self, *args, drop: nn.Module, act: nn.Module, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.drop, self.act = drop, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


def convert_to_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm of ``module`` (recursively) by a :class:`GlobalBatchNorm` with the same state
    (timm's BatchNormAct2d by a :class:`GlobalBatchNormAct` keeping its dropout and activation)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        settings = (module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if isinstance(module, BatchNormAct2d):
            converted = GlobalBatchNormAct(*settings, drop=module.drop, act=module.act)
        else:
            converted = GlobalBatchNorm(*settings)
        reference = next(iter([*module.parameters(), *module.buffers()]), None)
        if reference is not None:
            converted.to(device=reference.device, dtype=reference.dtype)
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        converted = convert_to_global_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def average_batchnorm_statistics(model: nn.Module) -> None:
    """Average the BatchNorm running statistics over ranks (when each rank normalised its own batch), so that
    rank 0's checkpoint and validation use statistics of all the data."""
    world = collectives.world_size()
    if world == 1:
        return
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            for buffer in (module.running_mean, module.running_var):
                collectives.all_reduce(buffer).div_(world)


def wrap_data_parallel(model: nn.Module, context: DistributedContext, device: torch.device) -> nn.Module:
    """DDP around ``model`` (the model itself in a single process). Buffers are not broadcast: the memory banks
    synchronise themselves, BatchNorm statistics are global or averaged per epoch."""
    if not context.enabled:
        return model
    with warnings.catch_warnings():  # newer torch deprecates the option but keeps it for exactly this use
        warnings.filterwarnings("ignore", message=r"`broadcast_buffers` is deprecated", category=FutureWarning)
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                       broadcast_buffers=False)


# ----------------------------------------------------------------------------------------------------------------
# Replica check
# ----------------------------------------------------------------------------------------------------------------
def state_checksums(module: nn.Module) -> torch.Tensor:
    """Two int64 checksums per state tensor (parameters and buffers) over its raw bytes: any bit flip changes them
    (a byte sum and a position-weighted byte sum, with int64 wrap-around)."""
    sums = []
    for tensor in module.state_dict().values():
        raw = tensor.detach().contiguous().reshape(-1).view(torch.uint8).to(torch.int64)
        weights = torch.arange(raw.numel(), device=raw.device, dtype=torch.int64) % _UINT8_WEIGHT_PERIOD + 1
        sums.append(torch.stack([raw.sum(), (raw * weights).sum()]))
    return torch.stack(sums)


def check_replicas_identical(module: nn.Module, step: int) -> None:
    """Raise RuntimeError unless every rank holds bit-identical weights, memory banks and other buffers."""
    if collectives.world_size() == 1:
        return
    checksums = collectives.all_gather(state_checksums(module))
    differing = (checksums != checksums[0]).any(-1).any(0)
    if bool(differing.any()):
        names = [name for name, bad in zip(module.state_dict().keys(), differing.tolist()) if bad]
        raise RuntimeError(f"step {step}: ranks diverged in {len(names)} state tensors, e.g. {names[:5]}")

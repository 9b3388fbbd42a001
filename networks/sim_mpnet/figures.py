"""Sim-MPNet's analysis figures as functions of arrays and models (no files, no engine): W-LD's memory K over
training drawn on a matplotlib axes, the DMW-LA layers with their feature maps, the memory cluster of every token of
a layer, and the panels that show each cluster's pixels.

``visualize.py`` reads the runs and checkpoints and lays these out with the engine's generic figure helpers
(``utils.plots``, ``utils.visual``); this module imports neither, so the family's figures stay beside its code.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from ..shared.modes import eval_mode, model_device

K_COLUMN = "memory_k"  # train_steps.csv column of the logged scalar wld/memory_k (SimMPNet.log_scalars)
CLUSTER_MAP_ALPHA = 0.5  # cluster colour over the image in the cluster map
HIGHLIGHT_ALPHA = 0.3  # cluster colour over the pixels a cluster panel highlights
DIM_FACTOR = 0.25  # brightness of the pixels a cluster panel does not highlight


# ----------------------------------------------------------------------------------------------------------------
# W-LD's memory K
# ----------------------------------------------------------------------------------------------------------------
def draw_k_curve(axes, steps: Mapping[str, np.ndarray], pool_size: int | None = None,
                 wld_start_epoch: int | None = None) -> None:
    """Memory K after every optimizer step (``steps``: arrays step, epoch and :data:`K_COLUMN`) on matplotlib
    ``axes``; with ``pool_size`` (M) the band [M/4, 3M/4] that W-LD keeps K in and its reset value M/2; with
    ``wld_start_epoch`` the first step of that epoch."""
    axes.plot(steps["step"], steps[K_COLUMN], drawstyle="steps-post", color="tab:blue", label="K")
    if pool_size is not None:
        axes.axhspan(pool_size / 4, 3 * pool_size / 4, color="tab:green", alpha=0.15,
                     label=f"[M/4, 3M/4], M = {pool_size}")
        axes.axhline(pool_size // 2, color="tab:green", linestyle="--", linewidth=1, label="M/2 (reset)")
        axes.set_ylim(0, pool_size)
    if wld_start_epoch is not None and np.any(steps["epoch"] >= wld_start_epoch):
        first = steps["step"][np.argmax(steps["epoch"] >= wld_start_epoch)]
        axes.axvline(first, color="grey", linestyle=":", label=f"W-LD starts (epoch {wld_start_epoch})")
    axes.set(xlabel="optimizer step", ylabel="memory K (columns replaced per cluster)",
             title="W-LD memory K over training")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize="small")


# ----------------------------------------------------------------------------------------------------------------
# DMW-LA layers and their cluster assignments
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryLayer:
    """One DMW-LA layer: its index in ``model.memory_layers()``, module name and input feature map."""
    index: int
    name: str
    channels: int
    height: int
    width: int
    num_k: int

    def describe(self) -> str:
        return (f"{self.index}: {self.name} ({self.channels} channels, {self.height}x{self.width} map, "
                f"{self.num_k} clusters)")


def _run_with_hooks(model: torch.nn.Module, layers: Sequence[torch.nn.Module], inputs: torch.Tensor) -> list:
    """Eval-mode forward of ``inputs``; returns per layer the input map(s) it received (eval never changes the
    memory, and the model's modes are restored)."""
    received: list[list[torch.Tensor]] = [[] for _ in layers]
    handles = [layer.register_forward_hook(lambda module, args, output, seen=seen: seen.append(args[0]))
               for layer, seen in zip(layers, received)]
    try:
        with eval_mode(model), torch.inference_mode():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return received


def memory_layers_of(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's memory-attention layers; ValueError for a model without any (e.g. a U-Net baseline)."""
    layers = model.memory_layers() if hasattr(model, "memory_layers") else []
    if not layers:
        raise ValueError(f"{getattr(model, 'arch', '') or type(model).__name__} has no memory (DMW-LA) layers: the "
                         "layer and cluster figures apply to Sim-MPNet checkpoints")
    return layers


def memory_layer_table(model: torch.nn.Module) -> list[MemoryLayer]:
    """The model's DMW-LA layers in ``memory_layers()`` order, with their feature-map sizes at the model's input
    size (found by one eval forward of a blank image)."""
    layers = memory_layers_of(model)
    names = {id(module): name for name, module in model.named_modules()}
    blank = torch.zeros(1, model.in_chans, model.img_size, model.img_size, device=model_device(model))
    maps = _run_with_hooks(model, layers, blank)
    return [MemoryLayer(index, names[id(layer)], *seen[0].shape[1:], layer.num_k)
            for index, (layer, seen) in enumerate(zip(layers, maps))]


def checked_layer(model: torch.nn.Module, layer_index: int) -> torch.nn.Module:
    """DMW-LA layer ``layer_index`` of the model; ValueError (listing the layers) for an index out of range, and for
    a layer still in its memory warm-up (its bank has no clusters yet)."""
    layers = memory_layers_of(model)
    if not 0 <= layer_index < len(layers):
        table = "; ".join(layer.describe() for layer in memory_layer_table(model))
        raise ValueError(f"DMW-LA layer index {layer_index} out of range [0, {len(layers) - 1}]; this model's "
                         f"layers: {table}")
    layer = layers[layer_index]
    if layer.in_warmup:
        raise ValueError(f"DMW-LA layer {layer_index} is still in its memory warm-up ({int(layer.warmup_step)} of "
                         f"{layer.warmup_iters} forwards): its bank has no clusters yet")
    return layer


def cluster_assignments(model: torch.nn.Module, layer_index: int, inputs: torch.Tensor) -> np.ndarray:
    """Memory cluster of every token of DMW-LA layer ``layer_index`` for a batch ``inputs`` [B, in_chans, S, S]:
    int64 [B, h, w] (h x w the layer's feature map). The layer's input is taken by a forward hook in eval mode;
    the cluster is the prototype of highest cosine similarity to the token's theta feature, as in the layer."""
    layer = checked_layer(model, layer_index)
    (seen,) = _run_with_hooks(model, [layer], inputs)
    if len(seen) != 1:
        raise RuntimeError(f"DMW-LA layer {layer_index} ran {len(seen)} times in one forward; expected once")
    feature_map = seen[0]
    with torch.inference_mode():
        assignment = layer.assign_clusters(feature_map)
    return assignment.reshape(feature_map.shape[0], *feature_map.shape[-2:]).cpu().numpy()


# ----------------------------------------------------------------------------------------------------------------
# Cluster panels
# ----------------------------------------------------------------------------------------------------------------
def upsample_nearest(assignment: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour upsampling of a 2-D map: output pixel (i, j) takes cell (i * h // H, j * w // W)."""
    rows = np.arange(shape[0]) * assignment.shape[0] // shape[0]
    columns = np.arange(shape[1]) * assignment.shape[1] // shape[1]
    return assignment[rows[:, None], columns[None, :]]


def cluster_highlights(shown: np.ndarray, pixels: np.ndarray, colours: np.ndarray) -> list[np.ndarray]:
    """One uint8 panel per cluster c of an image shown as ``shown`` (uint8 RGB [H, W, 3]): the pixels assigned to c
    (``pixels`` [H, W], its receptive field) tinted with ``colours[c]``, the others dimmed."""
    return [np.round(np.where((pixels == cluster)[..., None],
                              (1.0 - HIGHLIGHT_ALPHA) * shown + HIGHLIGHT_ALPHA * colour.astype(np.float64),
                              DIM_FACTOR * shown)).astype(np.uint8)
            for cluster, colour in enumerate(colours)]

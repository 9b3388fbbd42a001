"""BatchNorm running statistics: how well they fit what each layer receives in evaluation, and their exact
re-estimation from training batches (PreciseBN, Wu & Johnson 2021).

A BatchNorm layer trains on batch statistics and evaluates with running statistics (a momentum average of the
batch statistics seen in training). When the two disagree, evaluation normalises the layer's input wrongly and
the error compounds downstream: e.g. one layer applied at several call sites that see different distributions, or
statistics that lag behind weights that changed fast. :func:`normalisation_fit` measures the disagreement;
:func:`recalibrate_batchnorm` replaces the running statistics by exact averages over N batches of the evaluation
network, every other weight and buffer (memory banks included) untouched.

``forward(model, batch)`` is how a batch goes through the model (the engine passes ``model.forward_batch``), so
these functions name no model.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn

BatchForward = Callable[[nn.Module, dict], object]


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """(name, layer) of every BatchNorm layer that keeps running statistics."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats]


@dataclass(frozen=True)
class NormalisationFit:
    """How one layer's running statistics fit its evaluation inputs (medians over channels):
    ``shift`` = |input mean - running mean| / running sd, ``variance_ratio`` = input variance / running variance."""

    layer: str
    shift: float
    variance_ratio: float

    @property
    def variance_factor(self) -> float:
        """max(ratio, 1 / ratio): how far the variance is off, either way."""
        return max(self.variance_ratio, 1.0 / self.variance_ratio)


class _InputMoments:
    """Per-channel sums of a layer's inputs over every forward, in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.total: torch.Tensor | float = 0.0
        self.squares: torch.Tensor | float = 0.0

    def __call__(self, module: nn.Module, inputs: tuple) -> None:
        x = inputs[0].detach().double().transpose(0, 1).reshape(inputs[0].shape[1], -1)
        self.count += x.shape[1]
        self.total = self.total + x.sum(1)
        self.squares = self.squares + x.square().sum(1)

    def mean_and_variance(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.total / self.count
        return mean, (self.squares / self.count - mean.square()).clamp(min=0)


def normalisation_fit(model: nn.Module, batches: Iterable[dict], forward: BatchForward) -> list[NormalisationFit]:
    """Evaluation-mode forwards of ``batches``; for every BatchNorm layer, the fit of its running statistics to the
    inputs it received (pooled over all batches). The model is left in evaluation mode; no state changes."""
    layers = batchnorm_layers(model)
    moments = {name: _InputMoments() for name, _ in layers}
    handles = [layer.register_forward_pre_hook(moments[name]) for name, layer in layers]
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                forward(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    return [_fit(name, layer, moments[name]) for name, layer in layers
            if moments[name].count]  # a layer this model's forward does not call has nothing to fit


def _fit(label: str, layer: nn.modules.batchnorm._BatchNorm, moments: _InputMoments) -> NormalisationFit:
    mean, variance = moments.mean_and_variance()
    running_mean, running_var = layer.running_mean.double().cpu(), layer.running_var.double().cpu()
    shift = (mean.cpu() - running_mean).abs() / (running_var + layer.eps).sqrt()
    ratio = (variance.cpu() + layer.eps) / (running_var + layer.eps)
    return NormalisationFit(label, float(shift.quantile(0.5)), float(ratio.quantile(0.5)))


def call_fits(model: nn.Module, batch: dict, forward: BatchForward) -> list[NormalisationFit]:
    """One forward of ``batch`` with batch statistics (:func:`batch_statistics`); for every call of every BatchNorm
    layer, the fit of its running statistics to that call's input (``layer`` names the call: ``name#k`` for the
    k-th call of a layer called several times). After :func:`recalibrate_batchnorm` on this one batch, every call of
    a layer that sees one distribution fits exactly (up to the unbiased variance's n / (n - 1)); a layer serving
    several call sites cannot fit them all."""
    layers = batchnorm_layers(model)
    calls: dict[str, list[_InputMoments]] = {name: [] for name, _ in layers}

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple) -> None:
            calls[name].append(_InputMoments())
            calls[name][-1](module, inputs)
        return hook

    handles = [layer.register_forward_pre_hook(record(name)) for name, layer in layers]
    try:
        with torch.no_grad(), batch_statistics(model.eval()):
            forward(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    fits = []
    for name, layer in layers:
        for index, moments in enumerate(calls[name]):
            label = name if len(calls[name]) == 1 else f"{name}#{index}"
            fits.append(_fit(label, layer, moments))
    return fits


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[dict], forward: BatchForward) -> int:
    """Re-estimate every BatchNorm layer's running statistics as the plain average, over ``batches``, of its batch
    mean and (unbiased) batch variance in forwards of the evaluation network (every other layer in evaluation mode:
    no memory update, no dropout). Weights and all other buffers stay as they are. Returns the number of batches;
    ValueError when there is none. The model is left in evaluation mode."""
    layers = [layer for _, layer in batchnorm_layers(model)]
    momenta = [layer.momentum for layer in layers]
    model.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average: batch n weighs 1/n, so the result is the exact mean
        layer.train()
    count = 0
    try:
        with torch.no_grad():
            for batch in batches:
                forward(model, batch)
                count += 1
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
            layer.eval()
    if count == 0:
        raise ValueError("no batch to recalibrate the BatchNorm statistics on")
    return count


def worst_first(fits: list[NormalisationFit]) -> list[NormalisationFit]:
    """Sorted by how far off they are: the larger of the shift (sd) and the variance factor's excess over 1."""
    return sorted(fits, key=lambda fit: max(fit.shift, fit.variance_factor - 1), reverse=True)


def format_fit_table(fits: list[NormalisationFit], rows: int = 8) -> str:
    """The worst-fitting layers first: shift in running standard deviations, variance ratio."""
    worst = worst_first(fits)[:rows]
    width = max([len("layer"), *(len(fit.layer) for fit in worst)])
    lines = [f"{'layer':<{width}}  shift (sd)  variance ratio"]
    lines += [f"{fit.layer:<{width}}  {fit.shift:10.2f}  {fit.variance_ratio:14.2f}" for fit in worst]
    return "\n".join(lines)


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """A diagnostic: within the block, every BatchNorm layer of the model normalises by the statistics of the batch
    it receives instead of its running statistics (even where a predictor puts the model in evaluation mode), and
    the running statistics stay as they were. Predictions that change a lot under it point at running statistics
    that do not fit."""
    layers = [layer for _, layer in batchnorm_layers(model)]
    saved = [(layer.momentum, layer.num_batches_tracked.clone()) for layer in layers]

    def use_batch_statistics(layer: nn.Module, inputs: tuple) -> None:
        layer.training = True

    handles = [layer.register_forward_pre_hook(use_batch_statistics) for layer in layers]
    for layer in layers:
        layer.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()
        for layer, (momentum, tracked) in zip(layers, saved):
            layer.momentum = momentum
            layer.num_batches_tracked.copy_(tracked)
            layer.training = model.training

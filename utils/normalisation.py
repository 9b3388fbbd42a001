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


@dataclass(frozen=True)
class _InputMoments:
    """Per-channel count, sum and sum of squares of a layer's inputs, in float64."""

    count: int
    total: torch.Tensor
    squares: torch.Tensor

    @classmethod
    def of(cls, x: torch.Tensor) -> _InputMoments:
        values = x.detach().double().transpose(0, 1).reshape(x.shape[1], -1)
        return cls(values.shape[1], values.sum(1), values.square().sum(1))

    @classmethod
    def pooled(cls, parts: list[_InputMoments]) -> _InputMoments:
        return cls(sum(part.count for part in parts), sum(part.total for part in parts),
                   sum(part.squares for part in parts))

    def mean_and_variance(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.total / self.count
        return mean, (self.squares / self.count - mean.square()).clamp(min=0)


def _call_moments(model: nn.Module, run: Callable[[], None]) -> dict[str, list[_InputMoments]]:
    """``run()`` without autograd, recording the input moments of every call of every BatchNorm layer."""
    calls: dict[str, list[_InputMoments]] = {name: [] for name, _ in batchnorm_layers(model)}

    def record(name: str):
        return lambda module, inputs: calls[name].append(_InputMoments.of(inputs[0]))

    handles = [layer.register_forward_pre_hook(record(name)) for name, layer in batchnorm_layers(model)]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return calls


def normalisation_fit(model: nn.Module, batches: Iterable[dict], forward: BatchForward) -> list[NormalisationFit]:
    """Evaluation-mode forwards of ``batches``; for every BatchNorm layer, the fit of its running statistics to the
    inputs it received (pooled over all batches). The model is left in evaluation mode; no state changes."""
    def run() -> None:
        for batch in batches:
            forward(model, batch)

    model.eval()
    calls = _call_moments(model, run)
    return [_fit(name, layer, _InputMoments.pooled(calls[name])) for name, layer in batchnorm_layers(model)
            if calls[name]]  # a layer this model's forward does not call has nothing to fit


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
    def run() -> None:
        with batch_statistics(model.eval()):
            forward(model, batch)

    calls = _call_moments(model, run)
    return [_fit(name if len(calls[name]) == 1 else f"{name}#{index}", layer, moments)
            for name, layer in batchnorm_layers(model) for index, moments in enumerate(calls[name])]


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

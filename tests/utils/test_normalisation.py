"""utils.normalisation against hand-computed values and float64 loops: the fit of running statistics, the
batch-statistics diagnostic, and PreciseBN recalibration (exact averages, nothing but BatchNorm statistics
changed - Sim-MPNet's memory banks included)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from networks import create_model
from tests.conftest import TINY_SIZE, tiny_options
from utils.normalisation import (
    batch_statistics, batchnorm_layers, call_fits, normalisation_fit, recalibrate_batchnorm,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def forward(model, batch):
    return model(batch["image"])


def test_fit_of_running_statistics_by_hand():
    layer = nn.BatchNorm2d(2).double().eval()
    layer.running_mean.copy_(torch.tensor([1.0, -2.0], dtype=torch.float64))
    layer.running_var.copy_(torch.tensor([4.0, 0.25], dtype=torch.float64))
    layer.eps = 0.0
    rng = np.random.default_rng(0)
    values = rng.normal(size=(2, 3, 2, 5, 5))  # two batches of 3
    fit, = normalisation_fit(layer, [{"image": torch.from_numpy(v)} for v in values], forward)
    pooled = values.transpose(2, 0, 1, 3, 4).reshape(2, -1)  # every value a channel received
    shifts = np.abs(pooled.mean(1) - [1.0, -2.0]) / np.sqrt([4.0, 0.25])
    ratios = pooled.var(1) / [4.0, 0.25]
    assert fit.shift == pytest.approx(np.median(shifts), abs=1e-12)
    assert fit.variance_ratio == pytest.approx(np.median(ratios), abs=1e-12)


def test_batch_statistics_normalise_by_the_batch_and_keep_the_running_statistics():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3)).double().eval()
    model[1].running_mean.fill_(5.0)
    state = copy.deepcopy(model.state_dict())
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad(), batch_statistics(model):
        model.eval()  # as the predictors do: the diagnostic holds anyway
        output = model(x)
    features = model[0](x).detach()
    expected = (features - features.mean((0, 2, 3), keepdim=True)) / torch.sqrt(
        features.var((0, 2, 3), unbiased=False, keepdim=True) + model[1].eps)
    expected = expected * model[1].weight.view(1, -1, 1, 1) + model[1].bias.view(1, -1, 1, 1)
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-12)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert not model[1].training


def trained_tiny_sim_mpnet() -> nn.Module:
    torch.manual_seed(0)
    model = create_model("sim_mpnet", pretrained=False, num_classes=3, **tiny_options("sim_mpnet")).double()
    model.start_training()
    with torch.no_grad():
        for _ in range(4):  # warm-up (2 forwards), k-means, memory phase
            model.train()(torch.rand(2, 1, TINY_SIZE, TINY_SIZE, dtype=torch.float64))
    return model


def test_recalibration_is_the_exact_average_of_batch_statistics_and_changes_nothing_else():
    model = trained_tiny_sim_mpnet()
    layers = dict(batchnorm_layers(model))
    statistics = {f"{name}.{stat}" for name in layers for stat in ("running_mean", "running_var",
                                                                   "num_batches_tracked")}
    before = copy.deepcopy(model.state_dict())
    generator = torch.Generator().manual_seed(1)
    batches = [{"image": torch.rand(3, 1, TINY_SIZE, TINY_SIZE, generator=generator, dtype=torch.float64)}
               for _ in range(3)]
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {name: [] for name in layers}

    def record(name):
        def hook(module, inputs):
            x = inputs[0].detach().transpose(0, 1).reshape(inputs[0].shape[1], -1)
            seen[name].append((x.mean(1), x.var(1, unbiased=True)))
        return hook

    handles = [layer.register_forward_pre_hook(record(name)) for name, layer in layers.items()]
    assert recalibrate_batchnorm(model, batches, forward) == 3
    for handle in handles:
        handle.remove()
    for name, layer in layers.items():
        assert len(seen[name]) == 3, name  # one call per batch: every layer has its own call site
        mean = sum(m for m, _ in seen[name]) / 3
        var = sum(v for _, v in seen[name]) / 3
        torch.testing.assert_close(layer.running_mean, mean, rtol=1e-10, atol=1e-12, msg=name)
        torch.testing.assert_close(layer.running_var, var, rtol=1e-10, atol=1e-12, msg=name)
        assert layer.momentum == 0.1 and not layer.training
    for name, value in model.state_dict().items():
        if name not in statistics:  # weights, memory banks, counters: untouched
            assert torch.equal(value, before[name]), f"{name} changed"
    assert any(not torch.equal(model.state_dict()[name], before[name]) for name in statistics)


def test_call_fits_name_every_call_and_fit_after_calibration_on_that_batch():
    model = trained_tiny_sim_mpnet()
    batch = {"image": torch.rand(5, 1, TINY_SIZE, TINY_SIZE, dtype=torch.float64)}
    recalibrate_batchnorm(model, [batch], forward)
    fits = call_fits(model, batch, forward)
    assert [fit.layer for fit in fits] == [name for name, _ in batchnorm_layers(model)]
    assert max(fit.shift for fit in fits) < 1e-6
    worst = max(fit.variance_factor for fit in fits)
    assert 1.0 <= worst < 1.07  # the running variance is unbiased: n / (n - 1) above the batch's (n >= 16 here)


def test_recalibration_without_batches_is_refused():
    with pytest.raises(ValueError, match="no batch"):
        recalibrate_batchnorm(nn.BatchNorm2d(2), [], forward)

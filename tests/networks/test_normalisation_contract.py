"""Every registered model's BatchNorm running statistics can fit what each of its layers receives.

A layer normalises a training batch by the batch's own statistics and, in evaluation, by its running statistics.
After a short training on a phantom, the running statistics are set to exactly those of one training batch
(``utils.normalisation.recalibrate_batchnorm`` on that batch alone, nothing else changed). Every call of every layer
in a forward of that batch must then receive inputs whose statistics equal its running statistics, and evaluation
mode must predict what batch statistics predict. This fails where a layer's running statistics cannot fit its
inputs: one BatchNorm applied at call sites that see different distributions (Sim-MPNet's shared DS-GIM before
per-site statistics: their average fits none of the six), or a train/evaluation difference (memory, dropout).
The calls are compared in a batch-statistics forward (as in training), not in evaluation mode: the tiny Sim-MPNet's
chain of six DS-GIM blocks on 4x4 maps amplifies even the unbiased variance's n / (n - 1) into tenths of a standard
deviation downstream, which says nothing about the mechanism tested here (benchmarks/normalisation_check.py measures
the evaluation-mode fit on real-sized runs). A second test checks that no module holding buffers of its own runs
more than once per forward, so no other such sharing hides.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from datasets import get_dataset
from networks import create_model, list_models
from tests.conftest import TINY_SIZE, tiny_context, tiny_options
from utils.inference import sum_of_heads
from utils.normalisation import batch_statistics, batchnorm_layers, call_fits, recalibrate_batchnorm

# Bounds of a fitting call: its inputs' mean within this many running standard deviations of the running mean, their
# variance within this factor of the running variance (medians over channels). A layer with one call site fits up to
# rounding and the unbiased variance's n / (n - 1) (n >= 256 here); the shared DS-GIM is off by several sd.
MAX_SHIFT = 0.05
MAX_VARIANCE_FACTOR = 1.05
MIN_PIXELS_AGREEING = 0.95  # evaluation-mode vs batch-statistics predictions of the calibration batch
TRAIN_STEPS = 3
BATCH = 16

pytestmark = pytest.mark.usefixtures("single_thread")


def phantom_batches(phantom: dict, model_name: str, in_chans: int) -> list[dict]:
    """Augmented training batches of the BUSI phantom (images in the model's channels, labels binary), with each
    model's context."""
    spec = get_dataset("busi")
    reader = spec.build(phantom["root_path"], phantom["list_dir"], spec.train_split, spec.num_classes, seed=0,
                        transform=spec.train_transform((TINY_SIZE, TINY_SIZE)))
    batches = []
    for epoch in range(2):
        reader.set_epoch(epoch)
        for item in DataLoader(reader, batch_size=BATCH, shuffle=False, drop_last=True):
            image = item["image"][:, :in_chans]
            batches.append({"image": image, "label": item["label"].long(),
                            **tiny_context(model_name, image, spec.num_classes)})
    return batches


def tiny_model(model_name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(model_name, pretrained=False, num_classes=2, in_chans=1, **tiny_options(model_name))


def short_training(model: torch.nn.Module, batches: list[dict]) -> torch.nn.Module:
    model.start_training()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = model.default_loss()
    model.train()
    for step in range(TRAIN_STEPS):
        batch = batches[step % len(batches)]
        loss = criterion(model.forward_batch(batch), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.after_optimizer_step(0, step == 0, loss.item())
    return model


def forward(model, batch):
    return model.forward_batch(batch)


@pytest.fixture(scope="module")
def busi_phantom(tmp_path_factory):
    phantom = get_dataset("busi").phantom
    return phantom.write(tmp_path_factory.mktemp("busi") / phantom.dir_name,
                         tmp_path_factory.mktemp("lists") / phantom.list_dir_name, seed=0, num_train=16, num_val=1,
                         num_test=1, size=TINY_SIZE)


@pytest.mark.parametrize("model_name", list_models())
def test_running_statistics_fit_every_call(model_name, busi_phantom):
    model = tiny_model(model_name)
    if not batchnorm_layers(model):
        pytest.skip(f"{model_name} has no BatchNorm layer")
    batches = phantom_batches(busi_phantom, model_name, in_chans=1)
    short_training(model, batches)
    calibration = batches[:1]
    recalibrate_batchnorm(model, calibration, forward)
    fits = call_fits(model, calibration[0], forward)
    assert {fit.layer.split("#")[0] for fit in fits} == {name for name, _ in batchnorm_layers(model)}
    bad = [fit for fit in fits if fit.shift > MAX_SHIFT or fit.variance_factor > MAX_VARIANCE_FACTOR]
    assert not bad, "running statistics that do not fit the inputs of a call: " + ", ".join(
        f"{fit.layer} (shift {fit.shift:.2f} sd, variance x{fit.variance_ratio:.2f})" for fit in bad[:5])
    with torch.no_grad():
        running = sum_of_heads(forward(model.eval(), calibration[0])).argmax(1)
        with batch_statistics(model):
            batch = sum_of_heads(forward(model, calibration[0])).argmax(1)
    assert (running == batch).double().mean() >= MIN_PIXELS_AGREEING


def owns_buffers(module: torch.nn.Module) -> bool:
    return any(True for _ in module.buffers(recurse=False))


@pytest.mark.parametrize("model_name", list_models())
def test_no_stateful_module_runs_twice_in_a_forward(model_name):
    """A module with buffers of its own (normalisation statistics, memory, counters) called at several sites of one
    forward would mix their states: each site needs its own module (Sim-MPNet's DS-GIM: per-site BatchNorm)."""
    model = tiny_model(model_name)
    if not any(owns_buffers(module) for module in model.modules()):
        pytest.skip(f"{model_name} has no module with buffers")
    calls: dict[str, int] = {}
    handles = [module.register_forward_pre_hook(lambda m, i, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
               for name, module in model.named_modules() if owns_buffers(module)]
    image = torch.rand(2, 1, TINY_SIZE, TINY_SIZE)
    with torch.no_grad():
        model.train().forward_batch({"image": image, **tiny_context(model_name, image, 2)})
    for handle in handles:
        handle.remove()
    assert calls, f"{model_name}: none of its modules with buffers ran"
    repeated = {name: count for name, count in calls.items() if count > 1}
    assert not repeated, f"modules with their own buffers run several times per forward: {repeated}"

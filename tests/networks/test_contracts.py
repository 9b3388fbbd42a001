"""The same contract for every registered model and every registered data set (timm's style of tests).

Models: forward shapes, backward reaches every trainable parameter, an evaluation forward changes no buffer, and a
checkpoint round trip through ``arch`` rebuilds the same function. Data sets: phantom -> reader -> one training
step -> evaluation -> metrics.csv, through the library the scripts call.
"""
from __future__ import annotations

import csv
import json

import pytest
import torch

from datasets import get_dataset, list_datasets
from networks import create_model, list_models
from networks.base import SegmentationModel
from tests.conftest import TINY_CONTEXT, TINY_SIZE, tiny_context, tiny_options
from utils.checkpoint import build_model_from_checkpoint, model_checkpoint, save_checkpoint
from utils.cli import build_test_parser, build_train_parser
from utils.evaluator import evaluate
from utils.inference import sum_of_heads
from utils.trainer import train

NUM_CLASSES = 3


def build(model: str, in_chans: int = 1) -> SegmentationModel:
    torch.manual_seed(0)
    return create_model(model, pretrained=False, num_classes=NUM_CLASSES, in_chans=in_chans, **tiny_options(model))


def heads(outputs) -> tuple[torch.Tensor, ...]:
    return (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)


def run(model_name: str, model: SegmentationModel, image: torch.Tensor):
    """``model(image)``; a model that needs context (TINY_CONTEXT) gets it through forward_batch."""
    if model_name not in TINY_CONTEXT:
        return model(image)
    return model.forward_batch({"image": image, **tiny_context(model_name, image, NUM_CLASSES)})


@pytest.mark.parametrize("model_name", list_models())
@pytest.mark.parametrize("in_chans", [1, 3])
def test_forward_shapes_and_backward(model_name, in_chans):
    model = build(model_name, in_chans).train()
    assert isinstance(model, SegmentationModel) and model.arch == model_name
    assert (model.num_classes, model.in_chans, model.img_size) == (NUM_CLASSES, in_chans, TINY_SIZE)
    batch = {"image": torch.rand(2, in_chans, TINY_SIZE, TINY_SIZE),
             "label": torch.randint(0, NUM_CLASSES, (2, TINY_SIZE, TINY_SIZE))}
    batch.update(tiny_context(model_name, batch["image"], NUM_CLASSES))
    outputs = model.forward_batch(batch)
    for logits in heads(outputs):
        assert logits.shape == (2, NUM_CLASSES, TINY_SIZE, TINY_SIZE)
    loss = model.default_loss()(outputs, batch["label"])
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"


@pytest.mark.parametrize("model_name", list_models())
def test_evaluation_forward_changes_no_buffer(model_name):
    model = build(model_name).train()
    with torch.no_grad():  # a few training forwards first: memory models leave their warm-up
        for _ in range(3):
            run(model_name, model, torch.rand(2, 1, TINY_SIZE, TINY_SIZE))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    model.eval()
    with torch.no_grad():
        image = torch.rand(2, 1, TINY_SIZE, TINY_SIZE)
        model.forward_batch({"image": image, **tiny_context(model_name, image, NUM_CLASSES)})
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), f"{name} changed in an evaluation forward"


@pytest.mark.parametrize("model_name", list_models())
def test_checkpoint_round_trip_through_arch(model_name, tmp_path):
    model = build(model_name).train()
    with torch.no_grad():
        run(model_name, model, torch.rand(2, 1, TINY_SIZE, TINY_SIZE))
    model.eval()
    path = tmp_path / "model.pth"
    save_checkpoint(path, model_checkpoint(model))
    rebuilt, saved = build_model_from_checkpoint(path)
    assert saved["arch"] == model_name and type(rebuilt) is type(model) and rebuilt.config == model.config
    assert rebuilt.extra_state() == model.extra_state()
    image = torch.rand(1, 1, TINY_SIZE, TINY_SIZE)
    with torch.no_grad():
        expected = sum_of_heads(run(model_name, model, image))
        actual = sum_of_heads(run(model_name, rebuilt.eval(), image))
    assert torch.equal(expected, actual)


def run_options(phantom: dict) -> list[str]:
    return ["--volume_path", phantom["volume_path"], "--list_dir", phantom["list_dir"], "--device", "cpu"]


def tiny_cli_options(model: str) -> list[str]:
    """The tiny configuration as command-line options (a tuple field takes its values one after another)."""
    options = []
    for name, value in tiny_options(model).items():
        options += [f"--{name}", *map(str, value if isinstance(value, tuple) else (value,))]
    return options


@pytest.mark.parametrize("model_name", list_models())
def test_every_model_trains_and_tests_on_an_image_set_through_the_scripts_configs(model_name, tiny_phantoms,
                                                                                   tmp_path):
    """Train two steps and test every model on the BUSI phantom through the configs the scripts build; a model
    with a batch context (support sets) gets it from the engine, with the training split as pool."""
    phantom = tiny_phantoms("busi")
    context = ["--support_size", "1", "--support_cache", str(tmp_path / "cache")] if model_name in TINY_CONTEXT else []
    run_dir = tmp_path / "run"
    config = build_train_parser("busi").parse_config(
        ["--model", model_name, "--root_path", phantom["root_path"], *run_options(phantom),
         *tiny_cli_options(model_name), *context, "--pretrained", "none", "--batch_size", "2", "--num_workers", "0",
         "--max_steps", "2", "--max_epochs", "2", "--output_dir", str(run_dir)])
    assert config.model_options["img_size"] == TINY_SIZE
    assert train(config)["global_step"] == 2
    record = evaluate(build_test_parser("busi").parse_config(
        [*run_options(phantom), "--checkpoint", str(run_dir / "last.pth"), "--output_dir", str(tmp_path / "test")]))
    spec = get_dataset("busi")
    test_cases = spec.build(phantom["volume_path"], phantom["list_dir"], spec.test_split, spec.num_classes)
    assert record["num_cases"] == len(test_cases)
    assert ("context" in record) == (model_name in TINY_CONTEXT)


@pytest.mark.parametrize("dataset", list_datasets())
def test_dataset_phantom_trains_one_step_and_evaluates(dataset, tiny_phantoms, tmp_path):
    spec = get_dataset(dataset)
    phantom = tiny_phantoms(dataset)
    reader = spec.build(phantom["root_path"], phantom["list_dir"], spec.train_split, spec.num_classes,
                        transform=spec.train_transform((TINY_SIZE, TINY_SIZE)))
    item = reader[0]
    assert item["image"].shape == (spec.in_chans, TINY_SIZE, TINY_SIZE) and item["label"].shape == (TINY_SIZE,) * 2

    run_dir = tmp_path / "run"
    config = build_train_parser(dataset).parse_config(
        ["--root_path", phantom["root_path"], *run_options(phantom), *tiny_cli_options("sim_mpnet"),
         "--pretrained", "none", "--batch_size", "2", "--num_workers", "0", "--max_steps", "1", "--max_epochs", "1",
         "--val_list", "none", "--output_dir", str(run_dir)])
    assert config.run.model == "sim_mpnet" and config.model_options["img_size"] == TINY_SIZE
    result = train(config)
    assert result["global_step"] == 1
    rows = list(csv.DictReader(open(run_dir / "train_steps.csv")))
    assert len(rows) == 1 and rows[0]["memory_k"] != ""

    test_dir = tmp_path / "test"
    record = evaluate(build_test_parser(dataset).parse_config(
        [*run_options(phantom), "--checkpoint", str(run_dir / "last.pth"), "--output_dir", str(test_dir)]))
    rows = list(csv.DictReader(open(test_dir / "metrics.csv")))
    test_cases = spec.build(phantom["volume_path"], phantom["list_dir"], spec.test_split, spec.num_classes)
    assert len(rows) == len(test_cases) * (spec.num_classes - 1)
    assert json.loads((test_dir / "summary.json").read_text())["mean_dice"] == pytest.approx(record["mean_dice"])

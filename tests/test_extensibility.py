"""A model and a data set registered inside a test train and test through train.py / test.py: neither needs an
engine edit. Also the second published-style use: a baseline (smp U-Net) through the same scripts."""
from __future__ import annotations

import csv
import json
import os
import runpy
import sys
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.nn as nn

from datasets import DatasetSpec, PhantomSpec, register_dataset, unregister_dataset
from datasets.base import ListedSegmentationDataset
from datasets.io.arrays import save_npz
from datasets.io.lists import write_list
from networks import SegmentationModel, register_model, unregister_model
from networks.registry import cli_option
from tests.conftest import TINY_SIZE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_CLASSES = ("square",)


# ----- a toy data set: grey 2-D slices for training, one grey volume for testing --------------------------------
class ToyReader(ListedSegmentationDataset):
    slice_splits = ("train",)

    def entry_path(self, entry: str) -> str:
        return os.path.join(self.base_dir, entry + ".npz")


def square_slice(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros((size, size), dtype=np.uint8)
    top, left = rng.integers(0, size // 2, 2)
    label[top:top + size // 3, left:left + size // 3] = 1
    return (0.2 + 0.6 * label + 0.05 * rng.standard_normal((size, size))).astype(np.float32), label


def write_toy(data_root, list_dir, seed: int = 0, num_train: int = 4, size: int = TINY_SIZE) -> dict:
    rng = np.random.default_rng(seed)
    train = []
    for index in range(num_train):
        image, label = square_slice(rng, size)
        save_npz(os.path.join(data_root, f"slice{index}.npz"), image=image, label=label)
        train.append(f"slice{index}")
    volume = [square_slice(rng, size) for _ in range(2)]
    save_npz(os.path.join(data_root, "volume0.npz"), image=np.stack([v[0] for v in volume]),
             label=np.stack([v[1] for v in volume]))
    write_list(os.path.join(list_dir, "train.txt"), train)
    write_list(os.path.join(list_dir, "test.txt"), ["volume0"])
    return dict(root_path=str(data_root), volume_path=str(data_root), list_dir=str(list_dir))


def toy_transform(size):
    def transform(image, label, rng):
        return torch.from_numpy(image)[None].float(), torch.from_numpy(label).long()
    return transform


# ----- a toy model family with a training hook, a logged scalar and extra state ---------------------------------
@dataclass(frozen=True)
class ToyConfig:
    num_classes: int = 2
    in_chans: int = 1
    img_size: int = field(default=TINY_SIZE, metadata=cli_option("input size"))
    width: int = field(default=4, metadata=cli_option("hidden channels"))


@dataclass(frozen=True)
class ToyTrainOptions:
    count_from_epoch: int = field(default=0, metadata=cli_option("first epoch whose steps are counted", minimum=0))


class ToyNet(SegmentationModel):
    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        self.net = nn.Sequential(nn.Conv2d(config.in_chans, config.width, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(config.width, config.num_classes, 1))
        self.options, self.steps = ToyTrainOptions(), 0

    def forward(self, x):
        return self.net(x)

    def start_training(self, options=None):
        self.options = options

    def after_optimizer_step(self, epoch, first_step_of_epoch, loss):
        self.steps += epoch >= self.options.count_from_epoch

    def log_scalars(self):
        return {"toy/steps": self.steps}

    def extra_state(self):
        return {"steps": self.steps}

    def load_extra_state(self, state):
        self.steps = state.get("steps", 0)


SAMPLERS_MADE: list[int] = []


def toy_batch_sampler(num_items, batch_size, context, seed, drop_singleton):
    """An episodic set would build its episodes here; the toy records the call and batches as usual."""
    from utils.distributed import GlobalBatchSampler

    SAMPLERS_MADE.append(num_items)
    return GlobalBatchSampler(num_items, batch_size, context, seed, drop_singleton=drop_singleton)


@pytest.fixture
def toys(tmp_path):
    register_model(lambda config, pretrained=None: ToyNet(config), config=ToyConfig, train_options=ToyTrainOptions,
                   name="toy_net")
    register_dataset(DatasetSpec(
        name="toy_squares", title="toy squares", class_names=TOY_CLASSES, in_chans=1, kind="volume",
        reader=ToyReader, root_path="./data/toy", volume_path="./data/toy", list_dir="./lists/toy",
        train_split="train", val_split=None, test_split="test", train_transform=toy_transform,
        batch_sampler=toy_batch_sampler,
        phantom=PhantomSpec(dir_name="toy", list_dir_name="toy", write=write_toy, options=("num_train", "size"))))
    yield write_toy(tmp_path / "data", tmp_path / "lists")
    unregister_model("toy_net")
    unregister_dataset("toy_squares")


def run_script(script: str, argv: list[str], monkeypatch) -> int:
    """Run a script's __main__ in this process (so that the test's registrations are visible); its exit code."""
    monkeypatch.setattr(sys, "argv", [script, *argv])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(os.path.join(REPO, script), run_name="__main__")
    return info.value.code


def test_toy_model_and_toy_dataset_through_the_scripts(toys, tmp_path, monkeypatch):
    run_dir, test_dir = tmp_path / "run", tmp_path / "test"
    data = ["--root_path", toys["root_path"], "--volume_path", toys["volume_path"], "--list_dir", toys["list_dir"]]
    common = ["--dataset", "toy_squares", "--device", "cpu"]
    code = run_script("train.py", [*common, *data, "--model", "toy_net", "--width", "3", "--count_from_epoch", "1",
                                   "--batch_size", "2", "--max_epochs", "2", "--num_workers", "0", "--base_lr",
                                   "0.01", "--val_list", "none", "--output_dir", str(run_dir)], monkeypatch)
    assert code == 0 and SAMPLERS_MADE[-1] == 4  # the data set's own batch sampler over its 4 slices
    steps = list(csv.DictReader(open(run_dir / "train_steps.csv")))
    assert [int(row["steps"]) for row in steps] == [0, 0, 1, 2]  # counted from epoch 1 (the training option)
    ckpt = torch.load(run_dir / "last.pth", weights_only=True)
    assert ckpt["arch"] == "toy_net" and ckpt["model_config"]["width"] == 3 and ckpt["model_extra"] == {"steps": 2}

    code = run_script("test.py", [*common, "--volume_path", toys["volume_path"], "--list_dir", toys["list_dir"],
                                  "--checkpoint", str(run_dir / "last.pth"), "--output_dir", str(test_dir)],
                      monkeypatch)
    assert code == 0
    rows = list(csv.DictReader(open(test_dir / "metrics.csv")))
    assert [(row["case"], row["class"]) for row in rows] == [("volume0", "square")]
    summary = json.loads((test_dir / "summary.json").read_text())
    assert summary["mean_dice"] == pytest.approx(float(rows[0]["dice"]), abs=1e-6)


def test_toy_model_unknown_option_and_wrong_arch(toys, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    common = ["--dataset", "toy_squares", "--device", "cpu", "--list_dir", toys["list_dir"], "--volume_path",
              toys["volume_path"]]
    assert run_script("train.py", [*common, "--root_path", toys["root_path"], "--model", "toy_net", "--scale",
                                   "pico"], monkeypatch) == 2
    assert "unrecognized arguments: --scale pico" in capsys.readouterr().err
    assert run_script("train.py", [*common, "--root_path", toys["root_path"], "--model", "toy_net", "--max_epochs",
                                   "1", "--batch_size", "2", "--num_workers", "0", "--val_list", "none",
                                   "--output_dir", str(run_dir)], monkeypatch) == 0
    capsys.readouterr()
    assert run_script("test.py", [*common, "--checkpoint", str(run_dir / "last.pth"), "--model", "unet"],
                      monkeypatch) == 2
    assert "checkpoint holds a 'toy_net' model, requested 'unet'" in capsys.readouterr().err


def test_train_py_requires_a_dataset(monkeypatch, capsys):
    assert run_script("train.py", ["--model", "unet"], monkeypatch) == 2
    assert "--dataset is required" in capsys.readouterr().err


def test_unet_baseline_on_synapse_through_the_scripts(tiny_phantoms, tmp_path, monkeypatch):
    """The same data, augmentation, loss and metrics as Sim-MPNet; only --model differs."""
    phantom = tiny_phantoms("synapse")
    run_dir, test_dir = tmp_path / "run", tmp_path / "test"
    data = ["--volume_path", phantom["volume_path"], "--list_dir", phantom["list_dir"], "--device", "cpu"]
    assert run_script("train.py", ["--model", "unet", "--dataset", "synapse", "--root_path", phantom["root_path"],
                                   *data, "--img_size", str(TINY_SIZE), "--encoder_name", "resnet18", "--batch_size",
                                   "2", "--max_epochs", "1", "--num_workers", "0", "--output_dir", str(run_dir)],
                      monkeypatch) == 0
    assert run_script("test_synapse.py", [*data, "--checkpoint", str(run_dir / "last.pth"), "--output_dir",
                                          str(test_dir)], monkeypatch) == 0
    summary = json.loads((test_dir / "summary.json").read_text())
    assert summary["checkpoint"] == str(run_dir / "last.pth") and len(summary["per_class"]) == 8
    config = json.loads((run_dir / "config.json").read_text())
    assert config["arch"] == "unet" and config["options"]["model_options"]["encoder_name"] == "resnet18"


class ContextModel(SegmentationModel):
    """Predicts class 1 everywhere when its context says so (as a support-set model reads its supports)."""

    def __init__(self):
        super().__init__()
        self.config = ToyConfig(img_size=16)
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward_batch(self, batch):
        image = batch["image"]
        logits = torch.zeros(image.shape[0], 2, *image.shape[-2:]) + self.anchor
        logits[:, 1] += batch["vote"].view(-1, 1, 1)
        return logits


def test_evaluation_passes_an_items_extra_entries_to_the_model():
    from utils.evaluator import evaluate_model

    label = np.zeros((2, 16, 16), dtype=np.int64)
    label[:, 4:12, 4:12] = 1
    items = [{"image": np.zeros((2, 16, 16), np.float32), "label": label, "case_name": name, "vote": vote}
             for name, vote in (("yes", 1.0), ("no", -1.0))]
    per_case, _ = evaluate_model(ContextModel(), items, kind="volume", img_size=16, num_classes=2)
    everywhere = 2 * label.sum() / (label.sum() + label.size)
    assert per_case["yes"][0][0] == pytest.approx(everywhere) and per_case["no"][0][0] == 0.0

"""Where encoder weights come from and what a run says about them: timm names a pretrained tag for every released
MaxViT file; ``python -m networks.sim_mpnet.fetch_weights`` saves timm's weights under the released name (the
download itself replaced here by a seeded model: no internet), which the loader reads back; within a run, the file
loaded is one line of log.txt and a missing one is one warning line there and nothing else (no second Python
warning); outside a run a missing file is one Python warning."""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import pytest
import timm
import torch

import networks.sim_mpnet.maxvit_encoder as maxvit_encoder
from networks import create_model
from networks.sim_mpnet import fetch_weights
from networks.sim_mpnet.config import PRETRAINED_FILES
from utils.runlog import run_logging

PICO = "maxvit_rmlp_pico_rw_256"
TINY = dict(num_classes=2, in_chans=1, img_size=64, img_size_s2=64, scale="pico", pool_size=4, feature_dim=16,
            warmup_iters=2)


@contextlib.contextmanager
def logged_records(name: str) -> Iterator[list[logging.LogRecord]]:
    """The records logged to logger ``name`` (and its children) in the block."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(maxvit_encoder, "PRETRAINED_DIR", tmp_path)
    monkeypatch.setattr(maxvit_encoder, "_warned_missing", set())
    return tmp_path


def test_timm_has_a_pretrained_tag_for_every_released_file():
    tags = set(timm.list_pretrained())
    assert sorted(fetch_weights.timm_name(name) for name in PRETRAINED_FILES if fetch_weights.timm_name(name) in tags) \
        == sorted(f"{name}.sw_in1k" for name in PRETRAINED_FILES)
    assert fetch_weights.timm_name("maxxvit_rmlp_small_rw_256") == "maxxvit_rmlp_small_rw_256.sw_in1k"


def test_fetch_saves_the_released_file_that_training_loads(weights_dir, monkeypatch):
    created = timm.create_model

    def offline(name, pretrained=False, **kwargs):  # timm's download, replaced by a seeded model of the same tag
        if pretrained:
            assert name == f"{PICO}.sw_in1k"
            torch.manual_seed(5)
            return created(name, pretrained=False, **kwargs)
        return created(name, pretrained=False, **kwargs)

    monkeypatch.setattr(fetch_weights.timm, "create_model", offline)
    assert fetch_weights.main(["--scale", "pico", "--out_dir", str(weights_dir)]) == 0
    path = weights_dir / PRETRAINED_FILES[PICO]
    torch.manual_seed(5)
    source = created(PICO, pretrained=False)
    model = create_model("sim_mpnet", **TINY, pretrained=None)
    assert torch.equal(model.encoder1.stem.conv1.weight, source.stem.conv1.weight) and path.is_file()


def test_a_run_logs_the_weight_file_loaded_once(weights_dir, tmp_path):
    path = weights_dir / PRETRAINED_FILES[PICO]
    torch.save(timm.create_model(PICO, pretrained=False).state_dict(), path)
    encoder = tmp_path / "resnet18.pth"
    torch.save(create_model("unet", num_classes=2, in_chans=3, img_size=64, encoder_name="resnet18",
                            pretrained=False).net.encoder.state_dict(), encoder)
    with run_logging(tmp_path / "log.txt", console=False):
        create_model("sim_mpnet", **TINY, pretrained=None)
        create_model("unet", num_classes=2, in_chans=3, img_size=64, encoder_name="resnet18", pretrained=str(encoder))
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [f"loaded {PICO} weights from {path}",
                                                          f"loaded resnet18 encoder weights from {encoder}"]


def test_a_missing_file_warns_once(weights_dir, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a Python warning beside the log line would be the second
        with run_logging(tmp_path / "log.txt", console=False):
            create_model("sim_mpnet", **TINY, pretrained=None)
            create_model("sim_mpnet", **TINY, pretrained=None)
        lines = (tmp_path / "log.txt").read_text().splitlines()
        assert len(lines) == 1 and "NO PRETRAINED WEIGHTS" in lines[0]
        assert f"python -m networks.sim_mpnet.fetch_weights --backbone {PICO}" in lines[0]


def test_a_training_run_writes_the_weight_file_into_its_log(tmp_path, capsys):
    """The model is built before the run folder is opened (bad input is refused before anything is written): the
    line is held, shown once on the console and written into log.txt once it is open."""
    from datasets import get_dataset
    from utils.cli import build_train_parser, run_cli
    from utils.trainer import train

    phantom = get_dataset("busi").phantom.write(tmp_path / "BUSI", tmp_path / "lists", num_train=2, num_val=1,
                                                num_test=1, size=32, seed=0)
    encoder = tmp_path / "resnet18.pth"
    torch.save(create_model("unet", num_classes=2, in_chans=3, img_size=32, encoder_name="resnet18",
                            pretrained=False).net.encoder.state_dict(), encoder)
    config = build_train_parser().parse_config(
        ["--dataset", "busi", "--model", "unet", "--encoder_name", "resnet18", "--img_size", "32", "--pretrained",
         str(encoder), "--root_path", phantom["root_path"], "--volume_path", phantom["volume_path"], "--list_dir",
         phantom["list_dir"], "--val_list", "none", "--max_steps", "1", "--batch_size", "2", "--num_workers", "0",
         "--device", "cpu", "--output_dir", str(tmp_path / "run")])
    assert run_cli(train, config) == 0
    line = f"loaded resnet18 encoder weights from {encoder}"
    assert [text.split("] ", 1)[-1] for text in (tmp_path / "run" / "log.txt").read_text().splitlines()
            if "loaded" in text] == [line]
    assert capsys.readouterr().err.count(line) == 1

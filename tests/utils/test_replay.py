"""Runs replayed from their record (utils/replay.py through utils/cli.py): ``train.py --config runs/X/config.json
--output_dir Y`` repeats the run (the same train_steps.csv), options given override the file's, ``test.py --config``
evaluates the run's last.pth on its data, and a bad file is one error line naming it."""
from __future__ import annotations

import json

import pytest
import torch

from utils.cli import build_test_parser, build_train_parser
from utils.evaluator import evaluate
from utils.trainer import train

pytestmark = pytest.mark.usefixtures("single_thread")

# Sim-MPNet pico at 64 px, 3 steps of 2 slices; every value differs from the parser's default, so a replay that
# dropped one would train another run
TINY_RUN = ["--model", "sim_mpnet", "--scale", "pico", "--img_size", "64", "--img_size_s2", "64", "--pool_size", "4",
            "--feature_dim", "16", "--warmup_iters", "2", "--wld_start_epoch", "1", "--pretrained", "none",
            "--device", "cpu", "--batch_size", "2", "--num_workers", "0", "--max_steps", "3", "--base_lr", "0.003",
            "--seed", "7", "--val_list", "none"]


@pytest.fixture(scope="module")
def original(tiny_phantoms, tmp_path_factory):
    phantom = tiny_phantoms("synapse")
    run_dir = tmp_path_factory.mktemp("replay") / "original"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests' single_thread (set up after module fixtures): the same float sums
    try:
        train(build_train_parser().parse_config(
            ["--dataset", "synapse", "--root_path", phantom["root_path"], "--volume_path", phantom["volume_path"],
             "--list_dir", phantom["list_dir"], *TINY_RUN, "--output_dir", str(run_dir)]))
    finally:
        torch.set_num_threads(threads)
    return {"dir": run_dir, "config": run_dir / "config.json", "phantom": phantom}


def test_a_replayed_run_writes_the_same_train_steps(original, tmp_path):
    replay_dir = tmp_path / "replay"
    config = build_train_parser().parse_config(["--config", str(original["config"]), "--output_dir", str(replay_dir)])
    assert config.run.dataset == "synapse" and config.run.model == "sim_mpnet"
    train(config)
    steps = (original["dir"] / "train_steps.csv").read_text()
    assert len(steps.splitlines()) == 4  # header + 3 steps
    assert (replay_dir / "train_steps.csv").read_text() == steps
    recorded = json.loads(original["config"].read_text())["options"]
    replayed = json.loads((replay_dir / "config.json").read_text())["options"]
    for options in (recorded, replayed):
        options["run"].pop("output_dir")
        options["run"].pop("notes")
    assert replayed == recorded


def test_options_given_override_the_file(original, tmp_path):
    config = build_train_parser().parse_config(["--config", str(original["config"]), "--output_dir",
                                                str(tmp_path), "--base_lr", "0.5", "--pool_size", "8"])
    assert config.recipe.base_lr == 0.5 and config.model_options["pool_size"] == 8
    assert config.recipe.batch_size == 2 and config.run.seed == 7 and config.run.max_steps == 3  # the file's
    assert config.run.val_list is None and config.train_options["wld_start_epoch"] == 1
    assert config.run.root_path == original["phantom"]["root_path"]
    # the fixed-data-set script of another data set takes the run's options but not its data folders
    other = build_train_parser("acdc").parse_config(["--config", str(original["config"]),
                                                     "--output_dir", str(tmp_path)])
    assert other.run.dataset == "acdc" and other.run.root_path != original["phantom"]["root_path"]
    assert other.recipe.base_lr == 0.003


def test_test_py_evaluates_the_run_of_the_file(original, tmp_path):
    config = build_test_parser().parse_config(["--config", str(original["config"]), "--output_dir", str(tmp_path),
                                               "--device", "cpu"])
    assert config.checkpoint == str(original["dir"] / "last.pth")
    assert (config.dataset, config.volume_path, config.list_dir) == (
        "synapse", original["phantom"]["volume_path"], original["phantom"]["list_dir"])
    record = evaluate(config)
    assert record["checkpoint"] == str(original["dir"] / "last.pth") and (tmp_path / "metrics.csv").is_file()


def test_a_bad_config_file_is_one_error_naming_it(tmp_path, capsys):
    not_json = tmp_path / "config.json"
    not_json.write_text("{ not json")
    no_options = tmp_path / "other.json"
    no_options.write_text(json.dumps({"arch": "unet"}))
    for path, problem in ((tmp_path / "missing.json", "does not exist"), (not_json, "not a readable JSON"),
                          (no_options, "records no run options")):
        with pytest.raises(SystemExit) as exit_info:
            build_train_parser().parse_config(["--config", str(path)])
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert exit_info.value.code == 2 and str(path) in error and problem in error, error

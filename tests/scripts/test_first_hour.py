"""A newcomer's first hour, as commands: the phantom prints the train and test commands to type next; typed (with
tiny model options), the training runs on the phantom's folders and ``test.py --checkpoint RUN/best_val.pth`` alone
evaluates it there, with the class count the run trained with (``--num_classes 3`` on a 2-class set, never
repeated). An option given overrides the recorded one; on another data set the run's folders are not used;
``visualize.py predictions --checkpoint X`` needs no data options either. A preparation prints its commands too,
and a missing list names --list_dir and the commands that write lists."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import visualize
from datasets import get_dataset
from datasets.errors import DataError
from datasets.next_steps import prepared_folders
from datasets.phantoms.cli import main as phantom_main
from datasets.prepare.busi import main as prepare_busi
from networks import create_model
from utils.checkpoint import model_checkpoint, save_checkpoint
from utils.cli import build_test_parser, run_cli
from utils.evaluator import evaluate

REPO = Path(__file__).resolve().parents[2]
# MatchSeg at widths 8 and 32 px, two random supports, one epoch of two steps; 3 classes on the 2-class BUSI set.
TINY = ["--model", "matchseg", "--img_size", "32", "--widths", "8", "8", "8", "8", "--support_size", "2",
        "--support_selection", "random", "--pretrained", "none", "--device", "cpu", "--max_epochs", "1",
        "--batch_size", "4", "--num_workers", "0", "--num_classes", "3"]
COUNTS = ["--num_train", "8", "--num_val", "2", "--num_test", "3", "--size", "32"]


def printed_commands(main, argv: list[str]) -> list[list[str]]:
    """The ``python ...`` command lines a command-line main prints, split as a shell would."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return [shlex.split(line) for line in out.getvalue().splitlines() if line.strip().startswith("python ")]


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """A printed ``python script.py ...`` command run as typed in ``cwd`` (the script from the repository)."""
    assert command[0] == "python"
    result = subprocess.run([sys.executable, str(REPO / command[1]), *command[2:]], cwd=cwd, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def first_hour(tmp_path_factory) -> dict:
    """Phantom written; the two printed commands typed in a fresh folder (training with tiny options)."""
    home = tmp_path_factory.mktemp("newcomer")
    train, test = printed_commands(phantom_main, ["--dataset", "busi", "--out", str(home / "data"), *COUNTS])
    run(train + TINY, home)
    tested = run(test, home)
    run_dir = home / option(train, "--output_dir")
    return dict(home=home, train=train, test=test, run_dir=run_dir, tested=tested,
                checkpoint=home / option(test, "--checkpoint"))


def test_the_phantom_prints_training_on_its_own_folders(first_hour, tmp_path):
    train, test = first_hour["train"], first_hour["test"]
    data = first_hour["home"] / "data"
    assert train[:4] == ["python", "train.py", "--dataset", "busi"]
    assert option(train, "--root_path") == option(train, "--volume_path") == str(data / "BUSI")
    assert option(train, "--list_dir") == str(data / "lists" / "lists_BUSI")
    assert test == ["python", "test.py", "--checkpoint", option(train, "--output_dir") + "/best_val.pth"]
    # Synapse: training slices and test volumes are two folders, as its phantom writes them
    train, _ = printed_commands(phantom_main, ["--dataset", "synapse", "--out", str(tmp_path), "--num_train", "1",
                                               "--num_test", "1", "--size", "16", "--depth", "2"])
    root, volumes = Path(option(train, "--root_path")), Path(option(train, "--volume_path"))
    assert sorted(p.name for p in root.iterdir())[0].endswith(".npz") and root.name == "train_npz"
    assert sorted(p.name for p in volumes.iterdir())[0].endswith(".npy.h5") and volumes.name == "test_vol_h5"


def test_test_py_takes_data_and_classes_from_the_checkpoint(first_hour):
    test_dir = first_hour["checkpoint"].parent / "test"
    summary = json.loads((test_dir / "summary.json").read_text())
    test_list = first_hour["home"] / "data" / "lists" / "lists_BUSI" / "test.txt"
    names = test_list.read_text().split()
    with open(test_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert summary["num_cases"] == len(names) == 3
    assert sorted({row["case"] for row in rows}) == sorted(names)
    assert [item["class"] for item in summary["per_class"]] == ["class_1", "class_2"]  # the run's 3 classes
    # class_2 is in no label: where it is not predicted either, its HD95 0 is said to mean 'nothing predicted'
    empty = [row for row in rows if float(row["dice"]) == 0 and float(row["hd95"]) == 0]
    note = f"the model predicted nothing for {len(empty)} (case, class) pairs"
    assert (note in first_hour["tested"].stdout) == bool(empty)  # (here 2 of class_2; hand-made: test_metrics.py)
    assert torch.load(first_hour["checkpoint"], weights_only=True)["model_config"]["num_classes"] == 3


def test_an_option_given_overrides_the_recorded_one(first_hour, tmp_path):
    checkpoint = str(first_hour["checkpoint"])
    recorded = build_test_parser().parse_config(["--checkpoint", checkpoint])
    data = first_hour["home"] / "data"
    assert (recorded.dataset, recorded.volume_path, recorded.list_dir, recorded.num_classes) == \
        ("busi", str(data / "BUSI"), str(data / "lists" / "lists_BUSI"), 3)
    lists = tmp_path / "lists"
    lists.mkdir()
    first_case = (data / "lists" / "lists_BUSI" / "test.txt").read_text().split()[0]
    (lists / "test.txt").write_text(first_case + "\n")
    config = build_test_parser().parse_config(["--checkpoint", checkpoint, "--list_dir", str(lists), "--device",
                                               "cpu", "--output_dir", str(tmp_path / "test")])
    assert config.list_dir == str(lists) and config.volume_path == str(data / "BUSI")
    assert run_cli(evaluate, config) == 0
    assert json.loads((tmp_path / "test" / "summary.json").read_text())["num_cases"] == 1
    assert build_test_parser().parse_config(["--checkpoint", checkpoint, "--num_classes", "2"]).num_classes == 2


def test_another_data_set_does_not_take_the_runs_folders(first_hour):
    config = build_test_parser().parse_config(["--dataset", "bus", "--checkpoint", str(first_hour["checkpoint"])])
    bus = get_dataset("bus")
    assert (config.dataset, config.volume_path, config.list_dir, config.num_classes) == \
        ("bus", bus.volume_path, bus.list_dir, bus.num_classes)


def test_a_file_of_no_training_run_still_needs_the_data_set(first_hour, tmp_path, capsys):
    bare = tmp_path / "bare.pth"
    record = torch.load(first_hour["checkpoint"], weights_only=True)
    save_checkpoint(bare, {key: value for key, value in record.items() if key != "options"})
    with pytest.raises(SystemExit):
        build_test_parser().parse_config(["--checkpoint", str(bare)])
    assert "--dataset is required (the checkpoint records none)" in capsys.readouterr().err


def test_visualize_predictions_needs_only_the_checkpoint(first_hour, tmp_path):
    # a U-Net in the run's record (visualize.py's predictions draw models without a support set)
    unet = create_model("unet", num_classes=3, in_chans=3, img_size=32, encoder_name="resnet18", pretrained=False)
    checkpoint = tmp_path / "unet.pth"
    save_checkpoint(checkpoint, {**torch.load(first_hour["checkpoint"], weights_only=True), **model_checkpoint(unet)})
    out = tmp_path / "predictions.png"
    assert visualize.main(["predictions", "--checkpoint", str(checkpoint), "--device", "cpu", "--out", str(out)]) == 0
    assert out.stat().st_size > 0


def test_a_preparation_prints_training_on_what_it_wrote(tmp_path):
    assert phantom_main(["--dataset", "busi", "--out", str(tmp_path), "--official"]) == 0
    train, test = printed_commands(prepare_busi, ["--src", str(tmp_path / "BUSI_official"), "--out",
                                                  str(tmp_path / "BUSI"), "--list_dir", str(tmp_path / "lists"),
                                                  "--size", "32"])
    root = Path(option(train, "--root_path"))
    listed = (Path(option(train, "--list_dir")) / "train.txt").read_text().split()
    assert root == tmp_path / "BUSI" and listed and all((root / f"{name}.npz").is_file() for name in listed)
    assert test[-1].endswith("/best_val.pth")
    assert prepared_folders("synapse", "data/x") == ("data/x/train_npz", "data/x/test_vol_h5")
    assert prepared_folders("acdc", "data/x") == ("data/x", "data/x")


def test_a_missing_list_names_the_option_and_the_commands_that_write_lists(tmp_path):
    with pytest.raises(DataError) as excinfo:
        get_dataset("busi").build(tmp_path, tmp_path / "nolists", "test", 2)
    message = str(excinfo.value)
    assert message.startswith(f"{tmp_path / 'nolists' / 'test.txt'}: list file does not exist")
    assert "--list_dir" in message and "python -m datasets.prepare.busi" in message
    assert "python -m datasets.phantoms --dataset busi" in message


def test_a_missing_checkpoint_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_test_parser().parse_config(["--checkpoint", str(tmp_path / "gone.pth")])
    assert f"--dataset is required ({tmp_path / 'gone.pth'}: no such file)" in capsys.readouterr().err

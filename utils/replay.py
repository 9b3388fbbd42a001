"""Runs replayed from their record: ``train.py --config runs/X/config.json [--output_dir Y] [options]`` starts a run
with the options that run's config.json records, and ``test.py --config runs/X/config.json`` evaluates that run (its
``last.pth``) on its data. Options given on the command line override the file's values (``utils.cli`` sets these as
the parser's defaults, the mechanism of test.py's checkpoint defaults, ``utils.run_defaults``).

Replayed for training: the run options (data, runtime, length) except what belongs to the original run only (its
resume path, its notes), the model's architecture options, its training options, its batch context's options and
the recipe. Every value comes from the file as recorded, so a replay with the same data, seed and device repeats the
run's steps (tests/utils/test_replay.py: the same train_steps.csv). On another data set than the file's (a fixed
``train_<set>.py`` or ``--dataset``) the run's data folders and class count mean nothing and are not taken.
"""
from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from datasets import get_dataset
from datasets.errors import DataError
from utils.config import FAMILY_GROUPS

__all__ = ["read_run_config", "config_selection", "config_defaults"]

NOT_REPLAYED = ("dataset", "model", "class_names", "notes", "resume")  # the selection, resolved or the run's own
DATA_OPTIONS = ("root_path", "volume_path", "list_dir", "num_classes", "val_list")  # of the file's data set only
TEST_OPTIONS = ("volume_path", "list_dir", "num_classes")  # what test.py takes of a training run's record
RUN_CHECKPOINT = "last.pth"


def read_run_config(path: str | os.PathLike) -> dict[str, Any]:
    """The option groups (``options``) of a run's config.json; DataError for a missing or unreadable file or one
    that records no options."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "--config file does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"--config is not a readable JSON file: {' '.join(str(exc).split())}") from None
    options = record.get("options") if isinstance(record, dict) else None
    if not isinstance(options, dict) or not isinstance(options.get("run"), dict):
        raise DataError(path, "--config records no run options ('options' -> 'run'): give a run's config.json")
    return options


def config_selection(path: str | os.PathLike, role: str) -> dict[str, str]:
    """What the file selects, where it records it: ``dataset``; for training the ``model``; for testing the
    ``checkpoint`` (the run's last.pth, beside the file)."""
    run = read_run_config(path)["run"]
    selected = {"dataset": run["dataset"]} if run.get("dataset") else {}
    if role == "train" and run.get("model"):
        selected["model"] = run["model"]
    if role == "test":
        selected["checkpoint"] = str(Path(path).parent / RUN_CHECKPOINT)
    return selected


def same_dataset(recorded: str | None, dataset: str) -> bool:
    """Whether the file's data set is ``dataset`` (False for none or one no longer registered)."""
    try:
        return bool(recorded) and get_dataset(recorded).name == get_dataset(dataset).name
    except (ValueError, DataError):
        return False


def config_defaults(path: str | os.PathLike | None, role: str, dataset: str, option_names: Collection[str]) -> dict:
    """``{option: recorded value}`` of the parser's ``option_names`` that the run's file records, for ``role``
    ('train': the run replayed; 'test': the run's data and its last.pth); {} without a file."""
    if not path:
        return {}
    options = read_run_config(path)
    run = options["run"]
    same_data = same_dataset(run.get("dataset"), dataset)
    if role == "test":
        values = {name: run.get(name) for name in TEST_OPTIONS if same_data}
        values["checkpoint"] = config_selection(path, role)["checkpoint"]
    else:
        values = {name: value for name, value in run.items()
                  if name not in NOT_REPLAYED and (same_data or name not in DATA_OPTIONS)}
        for group in (*FAMILY_GROUPS, "recipe"):
            values.update(options.get(group) or {})
        if values.get("pretrained") is False:  # recorded as resolved: random init
            values["pretrained"] = "none"
    # None is a value only for val_list (no validation); elsewhere it means "not recorded"
    return {name: value for name, value in values.items()
            if name in option_names and (value is not None or name == "val_list")}

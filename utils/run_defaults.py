"""Defaults of ``test.py`` / ``test_<set>.py`` / ``visualize.py`` from the training run a checkpoint records.

A checkpoint stores its run's options (``utils.config.saved_options``): the data set, the data folders, the list
folder and the class count. Testing or drawing that checkpoint on the same data set takes them as defaults, so
``python test.py --checkpoint runs/x/best_val.pth`` needs nothing repeated; an option given on the command line
overrides its recorded value. On another data set (e.g. MatchSeg's cross-domain tests, BUSI -> BUS) the run's
folders mean nothing, so only the data set's own defaults apply.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from datasets import get_dataset
from utils.checkpoint import upgrade_checkpoint
from utils.config import RunOptions, saved_options

# Run options that are defaults of an evaluation of the same data set (classes: the model's class count).
RECORDED_DATA_OPTIONS = ("volume_path", "list_dir", "num_classes")


def recorded_run(checkpoint: str | os.PathLike | None) -> RunOptions | None:
    """The run options a checkpoint records, or None (no file, unreadable, or a file of no training run: imported
    weights). The tensors are memory-mapped, not read; a damaged file is reported by the real load later."""
    if not checkpoint:
        return None
    try:
        record = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        record = upgrade_checkpoint(record) if isinstance(record, dict) else None
        run = saved_options(record).run if record and record.get("options") else None
    except Exception:  # noqa: BLE001 - unreadable here is reported, with its reason, by the real load
        return None
    return run if run is not None and run.dataset else None


def same_dataset(first: str, second: str) -> bool:
    """Whether two data set names (any case, or a name and an alias) are the same registered set."""
    try:
        return get_dataset(first).name == get_dataset(second).name
    except ValueError:
        return False


def checkpoint_defaults(checkpoint: str | os.PathLike | None, dataset: str | None,
                        names: Sequence[str] = RECORDED_DATA_OPTIONS) -> dict[str, Any]:
    """``{option: recorded value}`` of the options ``names`` that the checkpoint's run recorded, when ``dataset``
    (None: not given, then the run's data set, returned as ``dataset``) is the run's data set; {} otherwise."""
    run = recorded_run(checkpoint)
    if run is None or (dataset is not None and not same_dataset(dataset, run.dataset)):
        return {}
    values = {name: getattr(run, name) for name in names if getattr(run, name, None) is not None}
    return values if dataset is not None else {"dataset": run.dataset, **values}

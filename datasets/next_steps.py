"""The commands to type after a phantom or a preparation has written a data set: training on exactly the folders
it wrote, then testing the run's checkpoint (which records those folders, so ``test.py`` needs nothing else).

The data options mean different folders per set (Synapse: ``--root_path`` is ``train_npz`` itself and
``--volume_path`` is ``test_vol_h5``; the other sets: one folder for both), so they are derived from the set's
registered defaults (``DatasetSpec.root_path`` / ``volume_path`` below one prepared folder), never spelled here.
"""
from __future__ import annotations

import os
import shlex

from .registry import get_dataset

RUNS_DIR = "runs"  # as utils.cli's, which this side may not import


def prepared_folders(dataset: str, data_dir: str | os.PathLike) -> tuple[str, str]:
    """(--root_path, --volume_path) of a set prepared into ``data_dir``: the registered defaults' layout below
    their common folder (Synapse: ``<data_dir>/train_npz``, ``<data_dir>/test_vol_h5``; others: ``data_dir``
    twice)."""
    spec = get_dataset(dataset)
    common = os.path.commonpath([os.path.normpath(spec.root_path), os.path.normpath(spec.volume_path)])
    return tuple(os.path.normpath(os.path.join(data_dir, os.path.relpath(os.path.normpath(path), common)))
                 for path in (spec.root_path, spec.volume_path))


def next_commands(dataset: str, root_path: str | os.PathLike, volume_path: str | os.PathLike,
                  list_dir: str | os.PathLike) -> list[str]:
    """``python train.py ...`` on these folders, then ``python test.py --checkpoint <run>/<file>`` (the
    best-validation checkpoint where the set has a validation list, else the last)."""
    spec = get_dataset(dataset)
    run_dir = f"{RUNS_DIR}/{spec.name}"
    train = ["python", "train.py", "--dataset", spec.name, "--root_path", os.fspath(root_path),
             "--volume_path", os.fspath(volume_path), "--list_dir", os.fspath(list_dir), "--output_dir", run_dir]
    checkpoint = "best_val.pth" if spec.val_split else "last.pth"
    return [shlex.join(train), shlex.join(["python", "test.py", "--checkpoint", f"{run_dir}/{checkpoint}"])]


def next_steps_text(dataset: str, root_path: str | os.PathLike, volume_path: str | os.PathLike,
                    list_dir: str | os.PathLike) -> str:
    """The lines the phantom and preparation commands print after writing a set."""
    lines = next_commands(dataset, root_path, volume_path, list_dir)
    return ("next: train on it (default model sim_mpnet; add --model NAME, e.g. unet or matchseg; "
            f"python train.py --dataset {get_dataset(dataset).name} --help lists every option), then test the run:\n"
            + "\n".join(f"  {line}" for line in lines))

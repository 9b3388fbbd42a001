"""The data-set registry: the four sets are registered with consistent specs, a toy set can come and go, and every
registered phantom goes through ``python -m datasets.phantoms`` into data its own reader accepts."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

import datasets
from datasets import (
    DatasetSpec, PhantomSpec, build_dataset, build_train_transform, get_dataset, list_datasets, register_dataset,
    unregister_dataset,
)
from datasets.augment import RandomGenerator
from datasets.augment_rgb import RGBAugment
from datasets.errors import DataError
from datasets.rgb import RGBSegmentationDataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FOUR = ["acdc", "isic2018", "segpc2021", "synapse"]  # Sim-MPNet's sets
MATCHSEG_SETS = ["bus", "busi", "glas", "ham10000"]  # MatchSeg's (RGB images, binary masks)
# Small CLI arguments each set takes (the CLI refuses options a set does not take), large enough for every class to
# show up in the test split.
TINY = {
    "synapse": ["--size", "32", "--depth", "6", "--num_train", "1", "--num_test", "1"],
    "acdc": ["--size", "32", "--depth", "4", "--num_train", "1", "--num_valid", "1", "--num_test", "1"],
    "isic2018": ["--size", "32", "--num_train", "1", "--num_valid", "1", "--num_test", "1"],
    "segpc2021": ["--size", "32", "--num_train", "1", "--num_valid", "1", "--num_test", "1"],
}


def test_the_four_sets_are_registered_with_their_facts():
    assert list_datasets() == sorted(FOUR + MATCHSEG_SETS)
    titles = {name: get_dataset(name).title for name in FOUR}
    assert titles == {"synapse": "Synapse multi-organ CT", "acdc": "ACDC cardiac MRI",
                      "isic2018": "ISIC-2018 skin lesions (dermoscopy)",
                      "segpc2021": "SegPC-2021 multiple-myeloma cells (microscopy)"}
    for name in FOUR:
        spec = get_dataset(name)
        assert spec.name == name and isinstance(spec.class_names, tuple)
        assert spec.num_classes == len(spec.class_names) + 1
        assert spec.prepare_module == f"datasets.prepare.{name}"
        assert (spec.in_chans, spec.kind) == ((3, "image") if issubclass(spec.reader, RGBSegmentationDataset)
                                              else (1, "volume"))
        transform = build_train_transform(name, [8, 6])
        assert type(transform) is (RGBAugment if spec.in_chans == 3 else RandomGenerator)
        assert transform.output_size == (8, 6)
        assert spec.phantom is not None and (spec.phantom.write_download is not None) == (spec.in_chans == 3)
    assert get_dataset("Synapse") is get_dataset("synapse")  # any case


def test_unknown_name_raises_value_error_naming_the_known_sets():
    known = ", ".join(sorted(FOUR + MATCHSEG_SETS))
    with pytest.raises(ValueError, match=f"unknown data set 'brats'; known: {known}"):
        get_dataset("brats")
    with pytest.raises(ValueError, match="known: acdc"):
        build_dataset("brats", ".", ".", "train", 2)


def test_spec_rejects_bad_kind_and_upper_case_name():
    with pytest.raises(ValueError, match="kind must be one of"):
        replace(get_dataset("acdc"), kind="video")
    with pytest.raises(ValueError, match="lower case"):
        replace(get_dataset("acdc"), name="ACDC")


def test_register_and_unregister_a_toy_set(tmp_path):
    def write_toy(data_root, list_dir, seed=0, num_train=1):
        return dict(root_path=os.fspath(data_root), volume_path=os.fspath(data_root), list_dir=os.fspath(list_dir))

    toy = DatasetSpec(
        name="toy", title="Toy set", class_names=("thing",), in_chans=3, kind="image",
        reader=datasets.ISIC2018Dataset, root_path="./data/Toy", volume_path="./data/Toy", list_dir="./lists/lists_Toy",
        train_split="train", val_split=None, test_split="test", train_transform=RGBAugment,
        phantom=PhantomSpec(dir_name="Toy", list_dir_name="lists_Toy", write=write_toy, options=("num_train",)),
    )
    try:
        assert register_dataset(toy) is toy
        assert "toy" in list_datasets() and get_dataset("TOY") is toy and toy.num_classes == 2
        assert build_train_transform("toy", (4, 4)).output_size == (4, 4)
        from datasets.phantoms.cli import main  # the CLI offers every registered set with a phantom
        assert main(["--dataset", "toy", "--out", str(tmp_path), "--num_train", "2"]) == 0
    finally:
        unregister_dataset("toy")
    assert "toy" not in list_datasets()
    unregister_dataset("toy")  # removing an absent set is a no-op
    with pytest.raises(ValueError, match="unknown data set"):
        get_dataset("toy")


def run_phantom_cli(name: str, out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datasets.phantoms", "--dataset", name, "--out", str(out),
                           *TINY[name]], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", [name for name in FOUR if get_dataset(name).phantom is not None])
def test_phantom_cli_writes_data_the_spec_reads(name, tmp_path):
    spec = get_dataset(name)
    done = run_phantom_cli(name, tmp_path)
    assert done.returncode == 0, done.stderr
    root = tmp_path / spec.phantom.dir_name
    list_dir = tmp_path / "lists" / spec.phantom.list_dir_name
    # the spec's default paths relative to the data root (Synapse: train_npz / test_vol_h5 below the set folder)
    train_dir = root / os.path.relpath(spec.root_path, f"./data/{spec.phantom.dir_name}")
    volume_dir = root / os.path.relpath(spec.volume_path, f"./data/{spec.phantom.dir_name}")
    train = spec.build(train_dir, list_dir, spec.train_split, spec.num_classes,
                       transform=spec.train_transform((16, 16)))
    test = spec.build(volume_dir, list_dir, spec.test_split, spec.num_classes)
    assert len(train) >= 1 and len(test) >= 1
    item = train[0]
    assert tuple(item["image"].shape) == (spec.in_chans, 16, 16) and tuple(item["label"].shape) == (16, 16)
    if spec.val_split is not None:
        assert len(spec.build(volume_dir, list_dir, spec.val_split, spec.num_classes)) >= 1

    # num_classes is exactly the reader's label range: every class shows up, and one class fewer is refused
    labels = np.concatenate([np.asarray(test[i]["label"]).ravel() for i in range(len(test))])
    assert set(np.unique(labels)) == set(range(spec.num_classes))
    too_few = spec.build(volume_dir, list_dir, spec.test_split, spec.num_classes - 1)
    with pytest.raises(DataError, match="outside"):
        [too_few[i] for i in range(len(too_few))]


@pytest.mark.parametrize("name", list_datasets())
def test_preparation_usage_names_the_command_one_types(name, capsys):
    """``--help`` of a set's preparation module starts ``usage: python -m <its module>`` (not the file's name)."""
    module = importlib.import_module(get_dataset(name).prepare_module)
    with pytest.raises(SystemExit) as exited:
        module.main(["--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m {get_dataset(name).prepare_module} ")

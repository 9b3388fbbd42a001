"""Episodes of support-set models through the engine (datasets.episodes.support_sets, utils.batch_context): which
supports a query gets (checked against a brute-force cosine ranking of independently computed HOG features), that
they come from the training split and never include the query or its lesion, the CLI options, and one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets import get_dataset
from datasets.episodes.providers import ContextSource, get_context
from datasets.episodes.support_sets import SUPPORT_IMAGES, SUPPORT_LABELS, SupportSetOptions, attach_support_sets
from utils.cli import build_test_parser, build_train_parser
from utils.evaluator import evaluate
from utils.trainer import train

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[2]
SIZE = 32


def brute_force_topk(query_features: np.ndarray, pool_features: np.ndarray, k: int, forbidden) -> list[list[int]]:
    """Per query: pool indices by cosine similarity (descending, ties by index), skipping forbidden(q, p)."""
    result = []
    for q, query in enumerate(query_features):
        scored = []
        for p, candidate in enumerate(pool_features):
            if forbidden(q, p):
                continue
            cosine = float(np.dot(query, candidate) / (np.linalg.norm(query) * np.linalg.norm(candidate)))
            scored.append((-cosine, p))
        result.append([p for _, p in sorted(scored)[:k]])
    return result


def hog_features(images: list[np.ndarray]) -> np.ndarray:
    """HOG of the grey images at 128 px, computed here without the backend (same parameters as its docstring)."""
    from skimage.feature import hog
    from skimage.transform import resize

    features = []
    for image in images:
        grey = (image.astype(np.float64) / 255.0) @ np.array([0.299, 0.587, 0.114])
        grey = resize(grey, (128, 128), order=1, anti_aliasing=True, preserve_range=True)
        features.append(hog(grey, orientations=9, pixels_per_cell=(16, 16), cells_per_block=(2, 2),
                            block_norm="L2-Hys"))
    return np.stack(features)


@pytest.fixture(scope="module")
def busi(tmp_path_factory):
    root = tmp_path_factory.mktemp("busi")
    spec = get_dataset("busi")
    return spec.phantom.write(root / "BUSI", root / "lists" / "lists_BUSI", num_train=8, num_val=2, num_test=3,
                              size=SIZE, seed=1)


def _source(name: str, paths: dict, split: str, transform=None) -> ContextSource:
    spec = get_dataset(name)
    dataset = spec.build(paths["root_path"], paths["list_dir"], split, spec.num_classes, transform=transform)
    return ContextSource(spec, dataset, paths["list_dir"])


def test_training_episodes_hold_the_brute_force_top_k_without_the_query(busi, tmp_path):
    train_source = _source("busi", busi, "train", get_dataset("busi").train_transform((SIZE, SIZE)))
    episodes = attach_support_sets(train_source, train_source, SupportSetOptions(support_size=3,
                                   support_cache=str(tmp_path)), training=True, img_size=SIZE, seed=0)
    pool = train_source.dataset
    features = hog_features([pool.load(i)[0] for i in range(len(pool))])
    expected = brute_force_topk(features, features, 3, lambda q, p: q == p)
    assert episodes.table.tolist() == expected
    item = episodes[0]
    assert item[SUPPORT_IMAGES].shape == (3, 3, SIZE, SIZE) and item[SUPPORT_IMAGES].dtype == torch.float32
    assert item[SUPPORT_LABELS].shape == (3, SIZE, SIZE) and item[SUPPORT_LABELS].dtype == torch.int64
    # each support pair is augmented with its own stream: the same pool image differs between slots/queries/epochs
    first = episodes.support_pair(0, 0)[0]
    episodes.set_epoch(1)
    assert not torch.equal(first, episodes.support_pair(0, 0)[0])
    assert episodes.context_info["support_selection"] == "hog" and episodes.context_info["support_size"] == 3


def test_evaluation_supports_come_from_the_training_split_unaugmented(busi, tmp_path):
    test_source, pool_source = _source("busi", busi, "test"), _source("busi", busi, "train")
    episodes = attach_support_sets(test_source, pool_source, SupportSetOptions(support_size=2,
                                   support_cache=str(tmp_path)), training=False, img_size=SIZE, seed=0)
    pool = pool_source.dataset
    queries = [test_source.dataset.load(i)[0] for i in range(len(test_source.dataset))]
    expected = brute_force_topk(hog_features(queries), hog_features([pool.load(i)[0] for i in range(len(pool))]),
                                2, lambda q, p: False)
    assert episodes.table.tolist() == expected
    train_names = {pool.case_name(entry) for entry in pool.entries}
    for index in range(len(episodes)):
        names = episodes.support_names(index)
        assert set(names) <= train_names and episodes[index]["case_name"] not in names
    item = episodes[1]
    stored_image, stored_label = pool.load(int(episodes.table[1, 0]))
    assert np.array_equal(item[SUPPORT_LABELS][0], stored_label)  # stored at the network size: not resampled
    assert item[SUPPORT_IMAGES].shape == (2, 3, SIZE, SIZE)


def test_ham10000_supports_skip_the_query_lesion(tmp_path):
    spec = get_dataset("ham10000")
    paths = spec.phantom.write(tmp_path / "HAM", tmp_path / "lists", num_train=10, num_val=2, num_test=2, size=SIZE,
                               seed=0)
    from datasets.ham10000 import read_lesion_ids, write_lesion_ids

    rows = read_lesion_ids(paths["list_dir"])
    # two images per lesion (as in HAM10000), so that a query's lesion has another image in the pool
    write_lesion_ids(paths["list_dir"], {entry: (f"L{index // 2}", dx)
                                         for index, (entry, (_, dx)) in enumerate(sorted(rows.items()))})
    source = _source("ham10000", paths, "train")
    groups = source.groups()
    assert len(set(groups)) < len(groups)
    k = 2
    episodes = attach_support_sets(source, source, SupportSetOptions(support_size=k, support_cache=str(tmp_path)),
                                   training=False, img_size=SIZE, seed=0)
    features = hog_features([source.dataset.load(i)[0] for i in range(len(source.dataset))])
    expected = brute_force_topk(features, features, k, lambda q, p: groups[q] == groups[p])
    assert episodes.table.tolist() == expected
    for q, row in enumerate(episodes.table.tolist()):
        assert all(groups[p] != groups[q] for p in row)


def test_random_selection_is_reproducible_and_differs_from_hog(busi, tmp_path):
    source = _source("busi", busi, "train")
    tables = [attach_support_sets(source, source, SupportSetOptions(support_size=3, support_selection=name,
                                  support_cache=str(tmp_path)), training=False, img_size=SIZE, seed=seed).table
              for name, seed in (("random", 0), ("random", 0), ("random", 5), ("hog", 0))]
    assert torch.equal(tables[0], tables[1])
    assert not torch.equal(tables[0], tables[2]) and not torch.equal(tables[0], tables[3])
    assert all(q not in row for table in tables for q, row in enumerate(table.tolist()))


@pytest.mark.parametrize("k, message", [(8, "larger than the support pool"), (0, ">= 1")])
def test_support_size_beyond_the_pool_is_one_clear_error(busi, tmp_path, k, message):
    source = _source("busi", busi, "train")
    with pytest.raises(ValueError, match=message):
        attach_support_sets(source, source, SupportSetOptions(support_size=k, support_cache=str(tmp_path)),
                            training=True, img_size=SIZE, seed=0)


def test_the_provider_is_registered_and_models_name_it():
    from networks import model_entry

    assert get_context("support_set").options is SupportSetOptions
    assert {name: model_entry(name).context for name in ("matchseg", "matchseg_wide", "universeg", "unet")} == \
        {"matchseg": "support_set", "matchseg_wide": "support_set", "universeg": "support_set", "unet": None}


def _train_argv(paths: dict, run_dir: Path, *extra: str) -> list[str]:
    return ["--model", "matchseg", "--root_path", paths["root_path"], "--volume_path", paths["volume_path"],
            "--list_dir", paths["list_dir"], "--img_size", str(SIZE), "--pretrained", "none",
            "--batch_size", "2", "--num_workers", "0", "--max_steps", "2", "--max_epochs", "1", "--device", "cpu",
            "--output_dir", str(run_dir), *extra]


def test_train_and_cross_domain_test_use_the_checkpoints_training_pool(busi, tmp_path, monkeypatch):
    from networks import model_entry

    monkeypatch.setitem(model_entry("matchseg").preset, "widths", (8, 8, 8, 8))  # tiny network, same code path
    bus = get_dataset("bus").phantom.write(tmp_path / "BUS", tmp_path / "lists" / "lists_BUS", num_train=2,
                                           num_val=1, num_test=3, size=SIZE, seed=2)
    run_dir = tmp_path / "run"
    argv = _train_argv(busi, run_dir, "--support_size", "2", "--support_cache", str(tmp_path / "cache"))
    config = build_train_parser("busi").parse_config(argv)
    assert config.context_options["support_size"] == 2 and config.context_options["support_selection"] is None
    assert train(config)["global_step"] == 2
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["context"]["support_selection"] == "hog" and saved["context"]["support_size"] == 2

    test_dir = tmp_path / "test_bus"
    record = evaluate(build_test_parser("bus").parse_config(
        ["--checkpoint", str(run_dir / "last.pth"), "--volume_path", bus["volume_path"], "--list_dir",
         bus["list_dir"], "--device", "cpu", "--output_dir", str(test_dir), "--save_overlays", "1"]))
    # the pool is the checkpoint's training split (BUSI train), not the BUS set under test
    assert record["context"]["support_pool"].startswith("busi ")
    assert record["context"]["support_size"] == 2 and record["num_cases"] == 3
    assert json.loads((test_dir / "summary.json").read_text())["context"] == record["context"]
    overlay = (test_dir / "overlays")
    assert len(list(overlay.glob("*.png"))) == 3

    override = evaluate(build_test_parser("bus").parse_config(
        ["--checkpoint", str(run_dir / "last.pth"), "--volume_path", bus["volume_path"], "--list_dir",
         bus["list_dir"], "--device", "cpu", "--output_dir", str(tmp_path / "test_bus_random"),
         "--support_selection", "random", "--support_size", "1"]))
    assert override["context"]["support_selection"] == "random" and override["context"]["support_size"] == 1


@pytest.mark.parametrize("extra, message", [
    (["--support_size", "9"], "larger than the support pool"),
    (["--support_selection", "clip"], "CLIP checkpoint file not found"),
    (["--clip_checkpoint", "/nonexistent/clip.pt"], "/nonexistent/clip.pt"),
])
def test_bad_support_options_give_one_error_line_and_no_run_directory(busi, tmp_path, extra, message):
    run_dir = tmp_path / "run"
    argv = _train_argv(busi, run_dir, "--support_size", "2", *extra)
    result = subprocess.run([sys.executable, "train.py", "--dataset", "busi", *argv], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not run_dir.exists()


def _copy_with_empty_train_list(paths: dict, destination: Path) -> str:
    """A copy of the phantom's list folder whose training list (the support pool) holds no entry."""
    import shutil

    list_dir = destination / "lists_empty_pool"
    shutil.copytree(paths["list_dir"], list_dir)
    (list_dir / "train.txt").write_text("")
    return str(list_dir)


def test_an_empty_support_pool_is_one_clear_error_in_training_and_testing(busi, tmp_path, monkeypatch):
    from networks import model_entry

    empty_lists = _copy_with_empty_train_list(busi, tmp_path)
    empty_pool = str(Path(empty_lists) / "train.txt")
    run_dir = tmp_path / "run_empty"
    argv = _train_argv({**busi, "list_dir": empty_lists}, run_dir, "--support_size", "2")
    result = subprocess.run([sys.executable, "train.py", "--dataset", "busi", *argv], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and empty_pool in lines[0] and "empty" in lines[0], result.stderr
    assert not run_dir.exists()

    # testing: a checkpoint trained on the full pool, tested against an empty one (--support_list_dir)
    monkeypatch.setitem(model_entry("matchseg").preset, "widths", (8, 8, 8, 8))
    trained = tmp_path / "run"
    train(build_train_parser("busi").parse_config(
        _train_argv(busi, trained, "--support_size", "2", "--support_cache", str(tmp_path / "cache"))))
    out_dir = tmp_path / "test_empty_pool"
    result = subprocess.run([sys.executable, "test.py", "--dataset", "busi", "--checkpoint", str(trained / "last.pth"),
                             "--volume_path", busi["volume_path"], "--list_dir", busi["list_dir"], "--device", "cpu",
                             "--support_list_dir", empty_lists, "--output_dir", str(out_dir)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and empty_pool in lines[0] and "empty" in lines[0], result.stderr
    assert not out_dir.exists()


def test_attach_refuses_an_empty_pool_naming_its_list(busi, tmp_path):
    """The provider's own check, for pools built without the list reader (e.g. from Python)."""
    import copy

    from datasets.errors import DataError

    source = _source("busi", busi, "train")
    emptied = copy.copy(source.dataset)
    emptied.entries, emptied.paths = [], []
    empty = ContextSource(source.spec, emptied, source.list_dir)
    with pytest.raises(DataError, match="support pool .* is empty") as raised:
        attach_support_sets(source, empty, SupportSetOptions(support_size=1, support_cache=str(tmp_path)),
                            training=False, img_size=SIZE, seed=0)
    assert source.dataset.list_path in str(raised.value)


def test_a_checkpoint_without_its_training_data_needs_the_pool_named(busi, tmp_path):
    from networks import create_model
    from utils.checkpoint import model_checkpoint, save_checkpoint

    checkpoint = tmp_path / "bare.pth"  # e.g. converted weights: no record of the data they were trained on
    model = create_model("matchseg", num_classes=2, in_chans=3, img_size=SIZE, widths=(8, 8, 8, 8))
    save_checkpoint(checkpoint, {**model_checkpoint(model), "args": {"support_size": 2}})
    test_argv = ["--checkpoint", str(checkpoint), "--volume_path", busi["volume_path"], "--list_dir",
                 busi["list_dir"], "--device", "cpu", "--support_cache", str(tmp_path / "cache")]
    out_dir = tmp_path / "test_bare"
    result = subprocess.run([sys.executable, "test.py", "--dataset", "busi", *test_argv, "--output_dir", str(out_dir)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and str(checkpoint) in lines[0], result.stderr
    assert "--support_dataset, --support_root, --support_list_dir" in lines[0] and not out_dir.exists()

    record = evaluate(build_test_parser("busi").parse_config(
        [*test_argv, "--output_dir", str(tmp_path / "test_named"), "--support_dataset", "busi",
         "--support_root", busi["root_path"], "--support_list_dir", busi["list_dir"]]))
    assert record["context"]["support_pool"] == f"busi {busi['list_dir']}/train.txt (8 images)"
    assert record["context"]["support_size"] == 2

"""predict.py for support-set models (MatchSeg, UniverSeg): each input image segmented against k supports chosen from
a folder of labelled pairs (``--support DIR``: images/ + masks/) or the checkpoint's training split; the engine's
conversion of a data set's images to a grey / [0, 1] model input (utils.model_input); the pair folder reader.

The reference is test.py: on the same images with the same pool, predict.py must segment every image exactly as
test.py does (per-case DSC equal to metrics.csv) and choose the same supports."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import get_dataset
from datasets.errors import DataError
from datasets.episodes.providers import ContextSource
from datasets.io.pairs import PairFolder, mask_to_label, write_pair_folder
from datasets.episodes.support_sets import SupportSetOptions, attach_support_sets
from utils.cli import build_test_parser, build_train_parser
from utils.evaluator import evaluate
from utils.metrics import case_metrics
from utils.model_input import input_conversion
from utils.predict import main as predict_main
from utils.trainer import train

pytestmark = pytest.mark.usefixtures("single_thread")

SIZE = 32
K = 2


def _train(paths: dict, run_dir: Path, cache: Path, *extra: str) -> Path:
    argv = ["--root_path", paths["root_path"], "--volume_path", paths["volume_path"], "--list_dir", paths["list_dir"],
            "--model", "matchseg", "--img_size", str(SIZE), "--widths", "8", "8", "8", "8", "--pretrained", "none",
            "--support_size", str(K), "--support_cache", str(cache), "--max_steps", "2", "--batch_size", "4",
            "--num_workers", "0", "--device", "cpu", "--output_dir", str(run_dir), *extra]
    train(build_train_parser("busi").parse_config(argv))
    return run_dir / "last.pth"


def _test(paths: dict, checkpoint: Path, out: Path) -> dict[str, float]:
    evaluate(build_test_parser("busi").parse_config(
        ["--checkpoint", str(checkpoint), "--volume_path", paths["volume_path"], "--list_dir", paths["list_dir"],
         "--device", "cpu", "--output_dir", str(out)]))
    with open(out / "metrics.csv", newline="") as handle:
        return {row["case"]: float(row["dice"]) for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """BUSI phantom, a tiny MatchSeg trained on it, test.py's per-case DSC, the train / test splits as pair folders."""
    root = tmp_path_factory.mktemp("predict_support")
    paths = get_dataset("busi").phantom.write(root / "BUSI", root / "lists" / "lists_BUSI", num_train=8, num_val=2,
                                              num_test=3, size=SIZE, seed=3)
    checkpoint = _train(paths, root / "run", root / "cache")
    spec = get_dataset("busi")
    for split in ("train", "test"):
        write_pair_folder(spec.build(paths["root_path"], paths["list_dir"], split, 2), root / split)
    return {"root": root, "paths": paths, "checkpoint": checkpoint,
            "test_dice": _test(paths, checkpoint, root / "test_out")}


def _predict(checkpoint: Path, queries: Path, out: Path, *extra: str) -> int:
    return predict_main(["--checkpoint", str(checkpoint), "--input", str(queries), "--output", str(out),
                         "--device", "cpu", *extra])


def _dice_of_outputs(out: Path, truth: Path) -> dict[str, float]:
    """Per-image DSC of predict.py's class-index PNGs against the 0/255 masks of a pair folder."""
    scores = {}
    for mask_path in sorted((truth / "masks").glob("*.png")):
        label = (np.asarray(Image.open(mask_path)) == 255).astype(np.int64)
        prediction = np.asarray(Image.open(out / mask_path.name)).astype(np.int64)
        scores[mask_path.stem] = float(case_metrics(prediction, label, 2)[0, 0])
    return scores


def _supports_csv(out: Path) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    with open(out / "supports.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            table.setdefault(row["input"], []).append(row["pool_image"])
    return table


def test_predict_with_the_training_pool_as_a_folder_segments_as_test_py(setup, tmp_path):
    out = tmp_path / "out"
    assert _predict(setup["checkpoint"], setup["root"] / "test" / "images", out, "--support",
                    str(setup["root"] / "train")) == 0
    dice = _dice_of_outputs(out, setup["root"] / "test")
    assert dice.keys() == setup["test_dice"].keys()
    for case, value in dice.items():
        assert value == pytest.approx(setup["test_dice"][case], abs=1e-6), case
    # the supports are test.py's: the test-time table of the same queries and pool
    spec, paths = get_dataset("busi"), setup["paths"]
    queries = spec.build(paths["volume_path"], paths["list_dir"], "test", 2)
    pool = spec.build(paths["root_path"], paths["list_dir"], "train", 2)
    episodes = attach_support_sets(ContextSource(spec, queries, paths["list_dir"]),
                                   ContextSource(spec, pool, paths["list_dir"]),
                                   SupportSetOptions(support_size=K, support_cache=str(tmp_path / "cache")),
                                   training=False, img_size=SIZE, seed=2222)
    expected = {queries.case_name(entry): episodes.support_names(index) for index, entry in enumerate(queries.entries)}
    assert _supports_csv(out) == expected


def test_without_support_the_checkpoints_training_pool_is_used(setup, tmp_path):
    with_folder, without = tmp_path / "folder", tmp_path / "training_pool"
    queries = setup["root"] / "test" / "images"
    assert _predict(setup["checkpoint"], queries, with_folder, "--support", str(setup["root"] / "train")) == 0
    assert _predict(setup["checkpoint"], queries, without) == 0
    for path in sorted(queries.glob("*.png")):
        assert np.array_equal(np.asarray(Image.open(with_folder / path.name)),
                              np.asarray(Image.open(without / path.name)))
    assert _supports_csv(with_folder) == _supports_csv(without)


def test_support_size_overrides_the_checkpoints_and_overlays_show_the_supports(setup, tmp_path):
    out = tmp_path / "out"
    assert _predict(setup["checkpoint"], setup["root"] / "test" / "images", out, "--support",
                    str(setup["root"] / "train"), "--support_size", "3", "--save_overlays") == 0
    assert {len(names) for names in _supports_csv(out).values()} == {3}
    overlay = np.asarray(Image.open(next((out / "overlays").glob("*.png"))))
    # row 1: image | prediction (32 px high); row 2: the three supports with their masks
    assert overlay.shape[0] > 2 * SIZE and overlay.shape[1] >= 3 * SIZE


def test_supports_of_another_size_than_the_network_are_resized_to_it(setup, tmp_path):
    """Pool pairs at 48 px for a 32 px network (resized as evaluation resizes supports, the labels nearest)."""
    pool = tmp_path / "pool48"
    for folder, resample in (("images", Image.Resampling.BILINEAR), ("masks", Image.Resampling.NEAREST)):
        (pool / folder).mkdir(parents=True)
        for path in sorted((setup["root"] / "train" / folder).glob("*.png")):
            Image.open(path).resize((48, 48), resample).save(pool / folder / path.name)
    out = tmp_path / "out"
    assert _predict(setup["checkpoint"], setup["root"] / "test" / "images", out, "--support", str(pool),
                    "--save_overlays") == 0
    assert len(list(out.glob("*.png"))) == 3 and len(_supports_csv(out)) == 3


def _copy_pool(setup, destination: Path) -> Path:
    shutil.copytree(setup["root"] / "train", destination)
    return destination


def _break_missing_mask(pool: Path) -> str:
    mask = sorted((pool / "masks").glob("*.png"))[0]
    mask.unlink()
    return f"no mask for this image (expected {mask})"


def _break_size(pool: Path) -> str:
    mask = sorted((pool / "masks").glob("*.png"))[0]
    Image.fromarray(np.zeros((SIZE, SIZE + 4), np.uint8)).save(mask)
    return "mask is 36x32 but its image"


def _break_values(pool: Path) -> str:
    mask = sorted((pool / "masks").glob("*.png"))[0]
    Image.fromarray(np.full((SIZE, SIZE), 128, np.uint8)).save(mask)
    return "mask values {128}: the model takes a binary mask (0/255 or 0/1)"


def _break_empty(pool: Path) -> str:
    for path in (pool / "images").iterdir():
        path.unlink()
    return "no PNG / JPEG / BMP images (empty folder)"


def _break_no_masks_folder(pool: Path) -> str:
    shutil.rmtree(pool / "masks")
    return "not a folder"


@pytest.mark.parametrize("breaker", [_break_missing_mask, _break_size, _break_values, _break_empty,
                                     _break_no_masks_folder])
def test_a_bad_support_folder_is_one_error_line_and_writes_nothing(setup, tmp_path, capsys, breaker):
    pool = _copy_pool(setup, tmp_path / "pool")
    message = breaker(pool)
    capsys.readouterr()
    out = tmp_path / "out"
    status = _predict(setup["checkpoint"], setup["root"] / "test" / "images", out, "--support", str(pool))
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not out.exists()


def test_support_size_beyond_the_folder_is_one_error_line(setup, tmp_path, capsys):
    capsys.readouterr()
    status = _predict(setup["checkpoint"], setup["root"] / "test" / "images", tmp_path / "out", "--support",
                      str(setup["root"] / "train"), "--support_size", "9")
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "--support_size 9 is larger than the support pool" in lines[0]
    assert str(setup["root"] / "train") in lines[0] and not (tmp_path / "out").exists()


def test_a_training_pool_that_is_not_here_asks_for_support(setup, tmp_path, capsys):
    moved = tmp_path / "moved"
    shutil.copytree(setup["paths"]["root_path"], moved)
    # a checkpoint trained on data that has since moved (its root_path no longer exists)
    checkpoint = _train({**setup["paths"], "root_path": str(moved)}, tmp_path / "run", tmp_path / "cache")
    shutil.rmtree(moved)
    capsys.readouterr()
    status = _predict(checkpoint, setup["root"] / "test" / "images", tmp_path / "out")
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and str(moved) in lines[0] and "give --support DIR" in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_without_its_training_data_asks_for_support(setup, tmp_path, capsys):
    from networks import create_model
    from utils.checkpoint import model_checkpoint, save_checkpoint

    checkpoint = tmp_path / "matchseg.pth"
    model = create_model("matchseg", num_classes=2, in_chans=3, img_size=SIZE, widths=(8, 8, 8, 8))
    save_checkpoint(checkpoint, {**model_checkpoint(model), "args": {"dataset": "busi"}})
    capsys.readouterr()
    status = _predict(checkpoint, setup["root"] / "test" / "images", tmp_path / "out")
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and "give --support DIR" in err and str(checkpoint) in err
    assert not (tmp_path / "out").exists()
    assert _predict(checkpoint, setup["root"] / "test" / "images", tmp_path / "out", "--support",
                    str(setup["root"] / "train")) == 0


def test_a_grey_unit_range_model_of_a_colour_set_is_segmented_as_test_py_does(setup, tmp_path):
    """--in_chans 1 --input_norm unit (UniverSeg's convention): training, test.py and predict.py all hand the model
    grey [0, 1] images converted from the colour set's ImageNet-normalised items."""
    checkpoint = _train(setup["paths"], tmp_path / "run", tmp_path / "cache", "--in_chans", "1", "--input_norm",
                        "unit", "--joint_attention", "0")
    test_dice = _test(setup["paths"], checkpoint, tmp_path / "test")
    out = tmp_path / "out"
    assert _predict(checkpoint, setup["root"] / "test" / "images", out, "--support", str(setup["root"] / "train")) == 0
    for case, value in _dice_of_outputs(out, setup["root"] / "test").items():
        assert value == pytest.approx(test_dice[case], abs=1e-6), case


def test_universegs_released_weights_segment_with_no_training_as_test_py_does(tmp_path):
    """The bare UniverSeg weights file (the fixture written by UniverSeg's own code) is a --checkpoint: a grey [0, 1]
    model of 128 px, its pool named; predict.py and test.py give the same per-image DSC (on images prepared at the
    network's size, so that neither resamples)."""
    weights = Path(__file__).resolve().parents[1] / "fixtures" / "universeg" / "universeg_w6-8-10-12.pt"
    spec = get_dataset("busi")
    paths = spec.phantom.write(tmp_path / "BUSI", tmp_path / "lists" / "lists_BUSI", num_train=4, num_val=1,
                               num_test=2, size=128, seed=4)
    for split in ("train", "test"):
        write_pair_folder(spec.build(paths["root_path"], paths["list_dir"], split, 2), tmp_path / split)
    evaluate(build_test_parser("busi").parse_config(
        ["--checkpoint", str(weights), "--volume_path", paths["volume_path"], "--list_dir", paths["list_dir"],
         "--support_dataset", "busi", "--support_root", paths["root_path"], "--support_list_dir", paths["list_dir"],
         "--support_size", "3", "--support_cache", str(tmp_path / "cache"), "--device", "cpu", "--output_dir",
         str(tmp_path / "test")]))
    with open(tmp_path / "test" / "metrics.csv", newline="") as handle:
        test_dice = {row["case"]: float(row["dice"]) for row in csv.DictReader(handle)}
    out = tmp_path / "out"
    assert _predict(weights, tmp_path / "test" / "images", out, "--dataset", "busi", "--support",
                    str(tmp_path / "train"), "--support_size", "3") == 0
    assert len(test_dice) == 2
    for case, value in _dice_of_outputs(out, tmp_path / "test").items():
        assert value == pytest.approx(test_dice[case], abs=1e-6), case


@pytest.mark.parametrize("normalization, model_mean, model_std", [
    ("unit", (0.0,), (1.0,)),
    (None, (0.299 * 0.485 + 0.587 * 0.456 + 0.114 * 0.406,), (0.299 * 0.229 + 0.587 * 0.224 + 0.114 * 0.225,)),
])
def test_colour_items_become_the_grey_input_a_grey_model_asks_for(normalization, model_mean, model_std):
    """Against PIL's own luma (convert('L'), integer-rounded) of the uint8 image."""
    from datasets.augment_rgb import normalize_image

    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    conversion = input_conversion(get_dataset("busi"), 1, normalization)
    grey = conversion(normalize_image(picture))
    luma = np.asarray(Image.fromarray(picture).convert("L"), dtype=np.float64) / 255.0
    assert grey.shape == (1, 5, 7)
    assert np.abs(grey[0] * model_std[0] + model_mean[0] - luma).max() <= 0.5 / 255 + 1e-6
    # torch tensors with a batch axis take the same path
    import torch

    batched = conversion(torch.from_numpy(normalize_image(picture))[None])
    assert np.allclose(batched[0].numpy(), grey, atol=1e-6)


def test_colour_items_keep_their_channels_for_a_unit_range_colour_model():
    from datasets.augment_rgb import normalize_image

    picture = np.random.default_rng(1).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    spec = get_dataset("busi")
    unit = input_conversion(spec, 3, "unit")(normalize_image(picture))
    assert np.allclose(unit, picture.transpose(2, 0, 1) / 255.0, atol=1e-6)
    assert input_conversion(spec, 3, None) is None  # the data set's own input: nothing to convert
    assert input_conversion(get_dataset("synapse"), 1, "unit") is None  # grey volumes are in [0, 1] already
    with pytest.raises(ValueError, match="takes 2-channel images but busi images have 3"):
        input_conversion(spec, 2, None)


def test_masks_are_binary_0_255_or_class_indices():
    assert np.array_equal(mask_to_label(np.array([[0, 255]], np.uint8), 2, "m.png"), [[0, 1]])
    assert np.array_equal(mask_to_label(np.array([[0, 1]], np.uint8), 2, "m.png"), [[0, 1]])
    assert np.array_equal(mask_to_label(np.array([[0, 2, 1]], np.uint8), 3, "m.png"), [[0, 2, 1]])
    with pytest.raises(DataError, match=r"m.png: mask values \{0, 3\}: the model takes class indices 0..2"):
        mask_to_label(np.array([[0, 3]], np.uint8), 3, "m.png")


def test_a_split_written_as_a_pair_folder_reads_back_as_its_items(setup, tmp_path):
    spec, paths = get_dataset("busi"), setup["paths"]
    split = spec.build(paths["root_path"], paths["list_dir"], "train", 2)
    folder = PairFolder(setup["root"] / "train", 2)
    assert folder.entries == sorted(split.case_name(entry) for entry in split.entries)
    for index, entry in enumerate(split.entries):
        image, label = split.load(index)
        read_image, read_label = folder.load(folder.entries.index(split.case_name(entry)))
        assert np.array_equal(read_image, image) and np.array_equal(read_label, label)
    with pytest.raises(DataError, match="already exists"):
        write_pair_folder(split, setup["root"] / "train")

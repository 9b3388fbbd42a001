"""ISIC-2018 and SegPC-2021 through their scripts on phantom sets: training (validated on the val split) and testing
of a 3-channel model, metrics.csv / summary.json / overlays checked against a naive prediction written here; an
image set refuses --is_savenii; a grey checkpoint is evaluated on the luma."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import zoom

from datasets.phantoms.isic2018 import write_isic2018_phantom
from datasets.phantoms.segpc2021 import write_segpc2021_phantom
from networks.sim_mpnet import SimMPNet
from tests.scripts.test_pipeline import naive_dice
from utils.checkpoint import build_model_from_checkpoint, model_checkpoint, save_checkpoint
from utils.cli import build_test_parser, run_cli
from utils.evaluator import evaluate
from utils.visual import PANEL_GAP, class_colours

REPO = Path(__file__).resolve().parents[2]
SIZE, IMG_SIZE = 48, 64  # phantom images are resized to the network's size and back
# Pico model with a 2-forward memory warm-up, so the clustered memory and W-LD are reached; 3 epochs of 2 steps
# (4 training images, batch 2) at lr 1e-3 are the least that gave both classes in the predictions of both sets.
EPOCHS, STEPS = 3, 6
TINY = ["--scale", "pico", "--img_size", str(IMG_SIZE), "--img_size_s2", str(IMG_SIZE), "--pool_size", "8",
        "--feature_dim", "16", "--warmup_iters", "2", "--pretrained", "none", "--device", "cpu", "--batch_size", "2",
        "--num_workers", "0", "--max_epochs", str(EPOCHS), "--max_steps", str(STEPS), "--wld_start_epoch", "0",
        "--base_lr", "1e-3"]
# Per data set: phantom writer and size options, and the foreground class names as the issue states them.
SETS = {
    "isic2018": (write_isic2018_phantom, dict(num_train=4, num_val=1, num_test=2, size=SIZE), ["lesion"]),
    # 2 training fields of 2 cells: 4 training crops
    "segpc2021": (write_segpc2021_phantom, dict(num_train=2, num_val=1, num_test=1, size=SIZE, field_size=96,
                                                num_cells=2), ["cytoplasm", "nucleus"]),
}
# ImageNet statistics, written out independently of datasets.augment_rgb.
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
METRICS = ("dice", "hd95", "jaccard", "asd")


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(REPO / script), *args], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def data_args(phantom: dict) -> list[str]:
    return ["--volume_path", phantom["volume_path"], "--list_dir", phantom["list_dir"]]


@pytest.fixture(scope="module", params=list(SETS))
def trained(request, tmp_path_factory) -> dict:
    """Phantom set written, then train_<set>.py and test_<set>.py (with overlays) run once."""
    dataset = request.param
    write, options, class_names = SETS[dataset]
    root = tmp_path_factory.mktemp(dataset)
    phantom = write(root / "data", root / "lists", seed=0, **options)
    run_dir, test_dir = root / "run", root / "test"
    run_script(f"train_{dataset}.py", "--root_path", phantom["root_path"], *data_args(phantom), *TINY,
               "--output_dir", str(run_dir))
    run_script(f"test_{dataset}.py", *data_args(phantom), "--checkpoint", str(run_dir / "last.pth"),
               "--output_dir", str(test_dir), "--device", "cpu", "--save-overlays", "3")
    with open(test_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return dict(dataset=dataset, phantom=phantom, class_names=class_names, run_dir=run_dir, test_dir=test_dir,
                rows=rows, summary=json.loads((test_dir / "summary.json").read_text()))


def test_training_builds_an_rgb_model_and_validates_on_images(trained):
    checkpoint = torch.load(trained["run_dir"] / "last.pth", weights_only=True)
    assert checkpoint["model_config"]["in_chans"] == 3
    assert checkpoint["model_config"]["num_classes"] == len(trained["class_names"]) + 1
    assert checkpoint["global_step"] == STEPS
    with open(trained["run_dir"] / "epochs.csv", newline="") as handle:
        epochs = list(csv.DictReader(handle))
    assert len(epochs) == EPOCHS
    assert all(0.0 <= float(epoch["val_dice"]) <= 1.0 for epoch in epochs)  # validated on the val split's images
    assert "val: mean DSC" in (trained["run_dir"] / "log.txt").read_text()


def test_metrics_csv_has_a_row_per_image_and_class_and_the_summary_is_its_mean(trained):
    rows, summary, class_names = trained["rows"], trained["summary"], trained["class_names"]
    images = trained["phantom"]["entries"]["test"]
    assert len(rows) == len(images) * len(class_names)
    assert {(row["case"], row["class"]) for row in rows} == {(i, c) for i in images for c in class_names}
    assert summary["num_cases"] == len(images) and summary["protocol"] == "transunet"
    for name in METRICS:  # per class the mean over images, then the mean over classes
        per_class = [np.mean([float(row[name]) for row in rows if row["class"] == c]) for c in class_names]
        assert [entry[name] for entry in summary["per_class"]] == pytest.approx(per_class, rel=1e-5, abs=1e-6)
        assert summary[f"mean_{name}"] == pytest.approx(np.mean(per_class), rel=1e-5, abs=1e-6)


def naive_prediction(model: torch.nn.Module, image_hwc: np.ndarray) -> np.ndarray:
    """ImageNet-normalise by the formula, zoom each channel (cubic) to the network size, sum the heads, argmax,
    zoom the labels back (nearest)."""
    normalised = ((image_hwc / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    height, width = image_hwc.shape[:2]
    resized = np.stack([zoom(channel.astype(np.float32), (IMG_SIZE / height, IMG_SIZE / width), order=3)
                        for channel in normalised])
    with torch.no_grad():
        label = sum(model(torch.from_numpy(resized)[None])).argmax(1)[0].numpy()
    return zoom(label, (height / IMG_SIZE, width / IMG_SIZE), order=0)


def shown_overlay(image_hwc: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Each channel min-max scaled (the normalisation is affine per channel, so the stored uint8 image gives the
    same up to float32 rounding: compare with a tolerance of one grey level), class pixels blended half and half
    with the class colour."""
    image = image_hwc.astype(np.float64)
    low, high = image.min(axis=(0, 1)), image.max(axis=(0, 1))
    shown = np.round((image - low) / (high - low) * 255)
    blended = np.round(0.5 * shown + 0.5 * class_colours(num_classes)[labels])
    return np.where((labels > 0)[..., None], blended, shown)


def test_scores_and_overlays_match_a_naive_prediction(trained):
    model, _ = build_model_from_checkpoint(trained["run_dir"] / "last.pth", {})
    model.eval()
    num_classes = len(trained["class_names"]) + 1
    dice = {(row["case"], row["class"]): float(row["dice"]) for row in trained["rows"]}
    predicted_classes = set()
    for case in trained["phantom"]["entries"]["test"]:
        with np.load(Path(trained["phantom"]["root_path"]) / f"{case}.npz") as archive:
            image, label = archive["image"], archive["label"].astype(np.int64)
        prediction = naive_prediction(model, image)
        predicted_classes |= set(np.unique(prediction).tolist())
        for index, name in enumerate(trained["class_names"], start=1):
            assert dice[case, name] == pytest.approx(naive_dice(prediction == index, label == index), abs=1e-5)

        overlay = np.asarray(Image.open(trained["test_dir"] / "overlays" / f"{case}.png").convert("RGB"))
        assert overlay.shape == (SIZE, 2 * SIZE + PANEL_GAP, 3)  # ground truth | prediction
        for panel, labels in ((overlay[:, :SIZE], label), (overlay[:, SIZE + PANEL_GAP:], prediction)):
            np.testing.assert_allclose(panel, shown_overlay(image, labels, num_classes), rtol=0, atol=1)
    assert len(predicted_classes) > 1, "a constant prediction would make the comparison weak"
    assert sorted(p.name for p in (trained["test_dir"] / "overlays").iterdir()) == sorted(
        f"{case}.png" for case in trained["phantom"]["entries"]["test"])  # one per image, whatever N


def cli_error(capsys, dataset: str, *argv: str) -> str:
    """The single `error: ...` line of test_<dataset>.py's entry, which must exit with code 2."""
    assert run_cli(evaluate, build_test_parser(dataset).parse_config(list(argv))) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_image_sets_refuse_nifti_output(tmp_path, capsys):
    out = tmp_path / "out"
    for dataset in SETS:
        message = cli_error(capsys, dataset, "--checkpoint", str(tmp_path / "never_read.pth"), "--output_dir",
                            str(out), "--device", "cpu", "--is_savenii")
        assert "--is_savenii" in message and f"{dataset} holds 2-D images" in message
    assert not out.exists()


def test_a_grey_checkpoint_is_evaluated_on_the_luma_and_other_channel_counts_are_refused(tmp_path, capsys):
    """A grey model of a colour set (--in_chans 1) gets the images converted to grey; 2 channels cannot be made."""
    from networks import create_model

    phantom = write_isic2018_phantom(tmp_path / "data", tmp_path / "lists", num_train=1, num_val=1, num_test=1,
                                     size=16)
    grey = SimMPNet(num_classes=2, in_chans=1, img_size=IMG_SIZE, img_size_s2=IMG_SIZE, scale="pico", num_k=2,
                    feature_dim=16, pool_size=4, warmup_iters=0, pretrained=False)
    checkpoint = tmp_path / "grey.pth"
    save_checkpoint(checkpoint, model_checkpoint(grey))
    out = tmp_path / "out"
    record = evaluate(build_test_parser("isic2018").parse_config(
        [*data_args(phantom), "--checkpoint", str(checkpoint), "--output_dir", str(out), "--device", "cpu"]))
    assert record["num_cases"] == 1 and "model input: colour converted to grey (luma)" in (out / "log.txt").read_text()

    two = create_model("unet", num_classes=2, in_chans=2, img_size=IMG_SIZE, encoder_name="resnet18")
    checkpoint = tmp_path / "two.pth"
    save_checkpoint(checkpoint, model_checkpoint(two))
    message = cli_error(capsys, "isic2018", *data_args(phantom), "--checkpoint", str(checkpoint), "--output_dir",
                        str(tmp_path / "out2"), "--device", "cpu")
    assert str(checkpoint) in message and "2-channel" in message and "3 channel" in message
    assert not (tmp_path / "out2").exists()

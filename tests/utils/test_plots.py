"""Analysis figures (utils.plots, networks.sim_mpnet.figures, visualize.py) from one tiny real training run, and
utils.visual's RGB overlays, grids and legends. Expected sizes and pixels are computed here from the inputs (layout,
naive blends, the model's own layer outputs), not taken from the code under test."""
from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import zoom

import visualize
from datasets.augment_rgb import normalize_image
from datasets.errors import DataError
from datasets.rgb import write_rgb_item, write_split_lists
from datasets.phantoms.synapse import write_synapse_phantom
from networks import create_model
from networks.shared.attention import to_tokens
from networks.sim_mpnet import SimMPNet, figures
from utils import plots
from utils.checkpoint import CheckpointError, build_model_from_checkpoint, model_checkpoint, save_checkpoint
from utils.cli import build_train_parser
from utils.inference import predict_image
from utils.trainer import train
from utils.visual import (
    LEGEND_ITEM_WIDTH, PANEL_GAP, TEXT_HEIGHT, class_colours, display_rgb, image_grid, legend, overlay,
)

REPO = Path(__file__).resolve().parents[2]
SIZE, DEPTH, POOL_SIZE, STEPS, EPOCHS = 64, 6, 8, 5, 2
LAYER = 0  # first encoder DMW-LA: 16 x 16 tokens at 64 x 64
TINY = ["--scale", "pico", "--img_size", str(SIZE), "--img_size_s2", str(SIZE), "--pool_size", str(POOL_SIZE),
        "--feature_dim", "16", "--warmup_iters", "2", "--pretrained", "none", "--device", "cpu", "--batch_size", "4",
        "--num_workers", "0", "--max_epochs", str(EPOCHS), "--max_steps", str(STEPS), "--wld_start_epoch", "0",
        "--val_list", "test_vol"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """Pico model trained for a few steps on phantom Synapse data (memory phase and W-LD reached)."""
    root = tmp_path_factory.mktemp("plots")
    phantom = write_synapse_phantom(root / "Synapse", root / "lists", num_train=2, num_test=1, size=SIZE,
                                    depth=DEPTH, seed=0)
    run_dir = root / "run"
    train(build_train_parser("synapse").parse_config(
        ["--root_path", phantom["root_path"], "--volume_path", phantom["volume_path"], "--list_dir",
         phantom["list_dir"], *TINY, "--output_dir", str(run_dir)]))
    case = phantom["test_cases"][0]
    with h5py.File(Path(phantom["volume_path"]) / f"{case}.npy.h5") as handle:
        volume, labels = handle["image"][()], handle["label"][()]
    return dict(dir=run_dir, checkpoint=run_dir / "last.pth", case=case, volume=volume, labels=labels,
                data=dict(volume_path=phantom["volume_path"], list_dir=phantom["list_dir"]))


# ---- helpers: naive restatements ------------------------------------------------------------------------------
def read_png(path: Path) -> np.ndarray:
    assert path.is_file() and not list(path.parent.glob("*.tmp")), path
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def assert_not_blank(pixels: np.ndarray) -> None:
    assert pixels.astype(np.float64).var() > 100.0


def last_rows(path: Path, key: str) -> dict[int, dict[str, str]]:
    with open(path, newline="") as handle:
        return {int(row[key]): row for row in csv.DictReader(handle)}


def grey(image: np.ndarray) -> np.ndarray:
    """Min-max scaled to 0..255 (float64)."""
    image = image.astype(np.float64)
    return np.round((image - image.min()) / (image.max() - image.min()) * 255)


def blend(base: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    return np.round((1 - alpha) * base + alpha * colours.astype(np.float64))


def grid_size(rows: int, columns: int, panel: int, legend_entries: int) -> tuple[int, int]:
    """(height, width) of an annotated grid: title, column titles, per row a caption and panels, gap, legend."""
    width = columns * panel + (columns - 1) * PANEL_GAP
    legend_lines = math.ceil(legend_entries / max(width // LEGEND_ITEM_WIDTH, 1))
    return 2 * TEXT_HEIGHT + rows * (TEXT_HEIGHT + panel) + PANEL_GAP + legend_lines * TEXT_HEIGHT, width


def panel(figure: np.ndarray, row: int, column: int, size: int) -> np.ndarray:
    top = 2 * TEXT_HEIGHT + row * (TEXT_HEIGHT + size) + TEXT_HEIGHT
    left = column * (size + PANEL_GAP)
    return figure[top:top + size, left:left + size]


def most_foreground_slice(labels: np.ndarray) -> int:
    return int(np.argmax([(label > 0).sum() for label in labels]))


# ---- run logs and curves ----------------------------------------------------------------------------------------
def test_run_csv_keeps_last_row_per_key_and_reports_bad_files(tmp_path):
    path = tmp_path / "train_steps.csv"
    path.write_text("step,epoch,loss,lr,memory_k\n1,0,2.5,0.1,4\n2,0,2.0,0.1,3\n3,1,1.5,0.1,5\n"
                    "2,0,1.9,0.1,2\n3,1,1.4,0.1,6\n4,1,1.0,0.1,4\n")  # resumed after step 1
    table = plots.read_run_csv(path, "step", ("step", "loss", "memory_k"))
    expected = last_rows(path, "step")
    assert table["step"].tolist() == sorted(expected)
    assert table["loss"].tolist() == [float(expected[s]["loss"]) for s in sorted(expected)]
    assert table["memory_k"].tolist() == [4, 2, 6, 4]

    epochs = tmp_path / "epochs.csv"
    epochs.write_text("epoch,mean_loss,val_dice,val_hd95,seconds\n0,2.0,,,1.0\n1,1.5,0.4,9.0,1.0\n")
    assert np.isnan(plots.read_run_csv(epochs, "epoch", ("val_dice",))["val_dice"][0])  # not validated

    bad = {"step,loss\n1,2.0\n": "missing column", "step,epoch,loss,lr,memory_k\n": "no data rows",
           "step,epoch,loss,lr,memory_k\n1,0,x,0.1,4\n": "line 2, column loss", "": "empty file",
           "step,epoch,loss,lr,memory_k\n1,0,2.0,0.1,4\n2,0,1.\n": "line 3: 3 fields"}
    for text, problem in bad.items():
        path.write_text(text)
        with pytest.raises(DataError, match=problem) as error:
            plots.read_run_csv(path, "step", ("step", "epoch", "loss", "lr", "memory_k"))
        assert str(path) in str(error.value)


def test_moving_average_is_a_trailing_mean():
    values = np.random.default_rng(0).normal(size=17)
    for window in (1, 4, 30):
        naive = [np.mean(values[max(0, i - window + 1):i + 1]) for i in range(len(values))]
        np.testing.assert_allclose(plots.moving_average(values, window), naive)
    with pytest.raises(ValueError):
        plots.moving_average(values, 0)


def test_k_curve_of_the_run(run, tmp_path):
    steps_csv = last_rows(run["dir"] / "train_steps.csv", "step")
    assert sorted(steps_csv) == list(range(1, STEPS + 1))
    out = tmp_path / "k.png"
    assert visualize.write_k_curve(run["dir"], out) == out
    pixels = read_png(out)
    assert pixels.shape[:2] == tuple(round(inches * plots.DPI) for inches in visualize.K_CURVE_FIGSIZE[::-1])
    assert_not_blank(pixels)

    figure = visualize.k_curve_figure(plots.load_step_log(run["dir"], (figures.K_COLUMN,)), POOL_SIZE)
    (axes,) = figure.axes
    np.testing.assert_array_equal(axes.lines[0].get_xydata(),
                                  [[s, float(steps_csv[s]["memory_k"])] for s in sorted(steps_csv)])
    (band,) = axes.patches
    assert (band.get_y(), band.get_y() + band.get_height()) == (POOL_SIZE / 4, 3 * POOL_SIZE / 4)


def test_training_curves_of_the_run(run, tmp_path):
    out = plots.write_training_curves(run["dir"], tmp_path / "curves.png", smooth=2, dpi=60)
    pixels = read_png(out)
    assert pixels.shape[:2] == tuple(round(inches * 60) for inches in plots.CURVES_FIGSIZE[::-1])
    assert_not_blank(pixels)

    steps_csv = last_rows(run["dir"] / "train_steps.csv", "step")
    epochs_csv = last_rows(run["dir"] / "epochs.csv", "epoch")
    assert sorted(epochs_csv) == list(range(EPOCHS))
    figure = plots.training_curves_figure(plots.load_step_log(run["dir"]), plots.load_epoch_log(run["dir"]), 2)
    step_axes, epoch_axes, dice_axes = figure.axes
    losses = [float(steps_csv[s]["loss"]) for s in sorted(steps_csv)]
    np.testing.assert_allclose(step_axes.lines[0].get_ydata(), losses)
    np.testing.assert_allclose(step_axes.lines[1].get_ydata()[1:], np.add(losses[1:], losses[:-1]) / 2)
    np.testing.assert_allclose(epoch_axes.lines[0].get_ydata(), [float(epochs_csv[e]["mean_loss"]) for e in
                                                                 sorted(epochs_csv)])
    np.testing.assert_allclose(dice_axes.lines[0].get_ydata(), [float(epochs_csv[e]["val_dice"]) for e in
                                                                sorted(epochs_csv)])

    without_epochs = plots.training_curves_figure(plots.load_step_log(run["dir"]), None)  # an older run
    epoch_of_step = [int(steps_csv[s]["epoch"]) for s in sorted(steps_csv)]
    naive = [np.mean([loss for loss, e in zip(losses, epoch_of_step) if e == epoch]) for epoch in range(EPOCHS)]
    np.testing.assert_allclose(without_epochs.axes[1].lines[0].get_ydata(), naive)
    assert not without_epochs.axes[2].lines


def test_k_curve_script_writes_the_default_figure(run):
    result = subprocess.run([sys.executable, str(REPO / "visualize.py"), "k-curve", "--run", str(run["dir"])],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert_not_blank(read_png(run["dir"] / "figures" / "k_curve.png"))


# ---- memory-cluster maps --------------------------------------------------------------------------------------
def independent_clusters(model: torch.nn.Module, layer_index: int, images: torch.Tensor) -> np.ndarray:
    """Pixel clusters [B, S, S]: the layer's input from a hook, the prototype of highest cosine similarity with its
    theta tokens, nearest upsampling by F.interpolate."""
    layer = model.memory_layers()[layer_index]
    seen = []
    handle = layer.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    model.eval()
    with torch.no_grad():
        model(images)
        handle.remove()
        theta = to_tokens(layer.theta(seen[0]))
        tokens = F.cosine_similarity(theta[..., None, :], layer.prototypes.T, dim=-1).argmax(-1)
    clusters = tokens.reshape(len(images), *seen[0].shape[-2:])
    return F.interpolate(clusters[:, None].float(), size=images.shape[-2:], mode="nearest")[:, 0].long().numpy()


def test_cluster_maps_match_the_layer_assignment(run, tmp_path):
    chosen = 2
    foreground = most_foreground_slice(run["labels"])
    model, _ = build_model_from_checkpoint(run["checkpoint"], {}, map_location="cpu")
    slices = run["volume"][[chosen, foreground]]  # phantom slices are already at the model's input size
    # the first layer that uses more than one cluster on these slices: with one, the colour check would prove little
    layer, clusters = next(((index, assigned) for index in range(len(model.memory_layers()))
                            if len(np.unique(assigned := independent_clusters(
                                model, index, torch.from_numpy(slices[:, None]).float()))) > 1), (None, None))
    assert layer is not None, "every DMW-LA layer puts these slices in one cluster"
    out = visualize.write_cluster_maps(run["checkpoint"], "synapse", [f"{run['case']}:{chosen}", run["case"]],
                                   layer=layer, out=tmp_path / "clusters.png", device="cpu", **run["data"])
    figure = read_png(out)
    num_k = model.memory_layers()[layer].num_k
    assert figure.shape[:2] == grid_size(rows=2, columns=2 + num_k, panel=SIZE, legend_entries=num_k)
    assert_not_blank(figure)

    colours = class_colours(num_k + 1)[1:]
    for row, (image, pixels) in enumerate(zip(slices, clusters)):
        shown = np.repeat(grey(image)[..., None], 3, axis=-1)
        np.testing.assert_array_equal(panel(figure, row, 0, SIZE), shown)
        np.testing.assert_array_equal(panel(figure, row, 1, SIZE), blend(shown, colours[pixels], 0.5))
        for cluster in range(num_k):
            mine = pixels == cluster
            expected = np.where(mine[..., None], blend(shown, colours[cluster], figures.HIGHLIGHT_ALPHA),
                                np.round(figures.DIM_FACTOR * shown))
            np.testing.assert_array_equal(panel(figure, row, 2 + cluster, SIZE), expected)


def test_cluster_assignment_leaves_the_memory_alone(run):
    model, _ = build_model_from_checkpoint(run["checkpoint"], {}, map_location="cpu")
    model.train()  # the figure must switch to eval itself: a training forward would run W-LD
    before = {name: value.clone() for name, value in [*model.state_dict().items(), *model.named_buffers()]}
    images = torch.from_numpy(run["volume"][:2, None]).float()
    figures.cluster_assignments(model, LAYER, images)
    figures.memory_layer_table(model)
    after = dict([*model.state_dict().items(), *model.named_buffers()])
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert all(module.training for module in model.modules())  # modes restored

    with torch.no_grad():  # the check is sensitive: a training forward does change the bank
        model(images)
    assert not torch.equal(before["encoder2.stages.0.0.pool"], model.state_dict()["encoder2.stages.0.0.pool"])


def test_cluster_maps_refuse_a_memory_still_in_warm_up():
    model = SimMPNet(num_classes=2, img_size=SIZE, img_size_s2=SIZE, scale="pico", num_k=2, feature_dim=8,
                     pool_size=4, warmup_iters=3, pretrained=False)
    with pytest.raises(ValueError, match="warm-up"):
        figures.cluster_assignments(model, LAYER, torch.zeros(1, 1, SIZE, SIZE))


@pytest.fixture(scope="module")
def rgb_set(tmp_path_factory) -> dict:
    """A 3-channel pico model saved as a checkpoint, and two isic2018-format images (48 x 48, model size 64)."""
    root = tmp_path_factory.mktemp("rgb")
    torch.manual_seed(0)
    model = SimMPNet(num_classes=2, in_chans=3, img_size=SIZE, img_size_s2=SIZE, scale="pico", num_k=3,
                     feature_dim=16, pool_size=4, warmup_iters=0, pretrained=False)
    checkpoint = root / "rgb.pth"
    save_checkpoint(checkpoint, model_checkpoint(model))
    rng, side = np.random.default_rng(0), 48
    images = {name: rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for name in ("img_a", "img_b")}
    label = np.zeros((side, side), np.uint8)
    label[10:30, 12:40] = 1
    for name, image in images.items():
        write_rgb_item(root / "data", name, image, label)
    write_split_lists(root / "lists", {"test": list(images)})
    return dict(model=model, checkpoint=checkpoint, images=images, label=label.astype(np.int64), side=side,
                data=dict(volume_path=str(root / "data"), list_dir=str(root / "lists")))


def test_rgb_cluster_maps_of_an_image_set(rgb_set, tmp_path):
    """Normalised [3, H, W] items resized per channel to the model's size; a grey data set is refused."""
    model, checkpoint = rgb_set["model"], rgb_set["checkpoint"]
    out = visualize.write_cluster_maps(checkpoint, "isic2018", ["img_b"], layer=LAYER, out=tmp_path / "rgb.png",
                                   device="cpu", **rgb_set["data"])
    figure = read_png(out)
    num_k = model.memory_layers()[LAYER].num_k
    assert figure.shape[:2] == grid_size(rows=1, columns=2 + num_k, panel=SIZE, legend_entries=num_k)
    normalised = normalize_image(rgb_set["images"]["img_b"])
    resized = np.stack([zoom(channel, SIZE / rgb_set["side"], order=3) for channel in normalised])
    shown = np.stack([grey(channel) for channel in resized], axis=-1)
    np.testing.assert_array_equal(panel(figure, 0, 0, SIZE), shown)
    (pixels,) = independent_clusters(model, LAYER, torch.from_numpy(resized[None]).float())
    np.testing.assert_array_equal(panel(figure, 0, 1, SIZE), blend(shown, class_colours(num_k + 1)[pixels + 1], 0.5))

    with pytest.raises(CheckpointError, match="3-channel"):
        visualize.write_cluster_maps(checkpoint, "synapse", out=tmp_path / "never.png")
    assert not (tmp_path / "never.png").exists()


def test_rgb_prediction_overlays_of_an_image_set(rgb_set, tmp_path):
    out = plots.write_prediction_overlays(rgb_set["checkpoint"], "isic2018", ["img_a", "img_b"],
                                          out=tmp_path / "pred.png", device="cpu", **rgb_set["data"])
    figure = read_png(out)
    side = rgb_set["side"]
    assert figure.shape[:2] == (2 * TEXT_HEIGHT + 2 * (TEXT_HEIGHT + side) + PANEL_GAP + TEXT_HEIGHT,
                                3 * side + 2 * PANEL_GAP)
    for row, name in enumerate(("img_a", "img_b")):
        normalised = normalize_image(rgb_set["images"][name])
        prediction = predict_image(rgb_set["model"], normalised, SIZE)
        for column, labels in ((1, rgb_set["label"]), (2, prediction)):
            np.testing.assert_array_equal(panel(figure, row, column, side), overlay(normalised, labels, 2))


# ---- prediction overlays ----------------------------------------------------------------------------------------
def test_prediction_overlays_show_label_and_prediction(run, tmp_path):
    out = plots.write_prediction_overlays(run["checkpoint"], "synapse", [f"{run['case']}:1"],
                                          out=tmp_path / "pred.png", device="cpu", **run["data"])
    figure = read_png(out)
    model, _ = build_model_from_checkpoint(run["checkpoint"], {}, map_location="cpu")
    num_classes = model.num_classes
    assert figure.shape[:2] == grid_size(rows=1, columns=3, panel=SIZE, legend_entries=num_classes - 1)
    assert_not_blank(figure)

    image, label = run["volume"][1], run["labels"][1]
    with torch.no_grad():
        logits = sum(head.float() for head in model.eval()(torch.from_numpy(image[None, None]).float()))
    prediction = logits.argmax(1)[0].numpy()
    shown = np.repeat(grey(image)[..., None], 3, axis=-1)
    colours = class_colours(num_classes)
    for column, labels in ((1, label), (2, prediction)):
        expected = np.where((labels > 0)[..., None], blend(shown, colours[labels], 0.5), shown)
        np.testing.assert_array_equal(panel(figure, 0, column, SIZE), expected)


def test_rgb_overlay_and_prediction_grid(tmp_path):
    rng = np.random.default_rng(0)
    height, width = 20, 24
    original = rng.integers(0, 256, (height, width, 3)).astype(np.float64)
    original[0, 0], original[0, 1] = 0, 255  # every channel spans 0..255
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    normalised = ((original / 255 - mean) / std).transpose(2, 0, 1).astype(np.float32)  # ImageNet-style [3, H, W]
    np.testing.assert_array_equal(display_rgb(normalised), original)

    label = np.zeros((height, width), np.int64)
    label[5:12, 3:9] = 1
    colours = class_colours(2)
    expected = np.where((label > 0)[..., None], blend(original, colours[label], 0.4), original)
    np.testing.assert_array_equal(overlay(normalised, label, 2, alpha=0.4), expected)
    np.testing.assert_array_equal(overlay(normalised.transpose(1, 2, 0), label, 2, alpha=0.4), expected)
    with pytest.raises(ValueError, match="same shape"):
        overlay(normalised[:, :, :-1], label, 2)

    items = [plots.FigureItem("image_a", normalised, label)]
    figure = plots.prediction_grid(items, [np.roll(label, 2, axis=1)], ["lesion"], "isic2018")
    assert figure.shape[:2] == (2 * TEXT_HEIGHT + TEXT_HEIGHT + height + PANEL_GAP + TEXT_HEIGHT,
                                3 * width + 2 * PANEL_GAP)
    top = 3 * TEXT_HEIGHT
    np.testing.assert_array_equal(figure[top:top + height, width + PANEL_GAP:2 * width + PANEL_GAP],
                                  overlay(normalised, label, 2))


def test_image_grid_pads_cells_and_legend_draws_swatches():
    small = np.zeros((3, 2, 3), np.uint8)
    large = np.full((5, 4, 3), 7, np.uint8)
    grid = image_grid([[small, large], [large]], gap=1)
    assert grid.shape == (2 * 5 + 1, 2 * 4 + 1, 3)
    np.testing.assert_array_equal(grid[:3, :2], small)
    assert (grid[3:5, :4] == 255).all()  # padding of the small panel's cell is white
    np.testing.assert_array_equal(grid[6:, :4], large)
    assert (grid[6:, 5:] == 255).all()  # missing cell of the short row

    names, colours = ["a", "b", "c"], class_colours(4)[1:]
    block = legend(names, colours, width=2 * LEGEND_ITEM_WIDTH)
    assert block.shape == (2 * TEXT_HEIGHT, 2 * LEGEND_ITEM_WIDTH, 3)  # two entries per line
    present = {tuple(pixel) for pixel in block.reshape(-1, 3)}
    assert all(tuple(colour) in present for colour in colours)


# ---- command line ----------------------------------------------------------------------------------------------
def cli_error(capsys, *argv: str) -> str:
    """stderr of visualize.main(argv), which must fail with exit code 2 and one line."""
    assert visualize.main(list(argv)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_cli_bad_input_gives_one_line_and_exit_code_2(run, tmp_path, capsys):
    missing = tmp_path / "nope"
    assert str(missing) in cli_error(capsys, "k-curve", "--run", str(missing))
    empty_run = tmp_path / "empty"
    empty_run.mkdir()
    assert str(empty_run / "train_steps.csv") in cli_error(capsys, "curves", "--run", str(empty_run))

    checkpoint = ["--checkpoint", str(run["checkpoint"]), "--dataset", "synapse", "--device", "cpu",
                  "--volume_path", run["data"]["volume_path"], "--list_dir", run["data"]["list_dir"]]
    message = cli_error(capsys, "clusters", *checkpoint, "--cases", "case9999", "--out", str(tmp_path / "c.png"))
    assert "case9999" in message and "test_vol.txt" in message and run["case"] in message
    message = cli_error(capsys, "predictions", *checkpoint, "--cases", f"{run['case']}:{DEPTH}")
    assert f"slice {DEPTH} out of range" in message and f"{run['case']}.npy.h5" in message
    layers = len(build_model_from_checkpoint(run["checkpoint"], {})[0].memory_layers())
    message = cli_error(capsys, "clusters", *checkpoint, "--layer", str(layers))
    assert f"index {layers} out of range" in message and "0: encoder2.stages.0.0 (32 channels, 16x16 map" in message
    assert not list(tmp_path.glob("*.png"))

    unet = tmp_path / "unet.pth"
    save_checkpoint(unet, model_checkpoint(create_model("unet", num_classes=9, in_chans=1, img_size=SIZE)))
    message = cli_error(capsys, "layers", "--checkpoint", str(unet))
    assert "unet has no memory (DMW-LA) layers" in message
    message = cli_error(capsys, "clusters", *checkpoint[:1], str(unet), *checkpoint[2:], "--layer", "0")
    assert "no memory (DMW-LA) layers" in message

    assert visualize.main(["layers", "--checkpoint", str(run["checkpoint"])]) == 0
    listed = capsys.readouterr().out.strip().splitlines()
    assert len(listed) == layers and listed[LAYER].startswith(f"{LAYER}: encoder2.stages.0.0")

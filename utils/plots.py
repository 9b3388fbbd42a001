"""Generic analysis figures: training curves from a run's logs, prediction grids of a checkpoint, the run-log readers
and the figure plumbing (matplotlib canvas, atomic PNG) that model families' figures use too (Sim-MPNet's K curve
and memory-cluster maps: ``networks.sim_mpnet.figures``, laid out by ``visualize.py``).

Curves come from a run directory's ``train_steps.csv`` / ``epochs.csv`` (written by ``utils.trainer``; after a
resume a step or epoch may appear twice and the last row counts) and are drawn with matplotlib's Agg canvas (no
display, no pyplot state). Image grids are assembled pixel-exactly with numpy (``utils.visual``), so every panel keeps
the resolution it was computed at. Every PNG is written atomically (temporary name, then ``os.replace``).

    from utils import plots
    plots.write_training_curves("runs/synapse_small_256")             # -> runs/.../figures/training_curves.png
    plots.write_prediction_overlays("runs/x/last.pth", "synapse", ["case0001:70"])
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from datasets import get_dataset
from datasets.errors import DataError
from utils.checkpoint import atomic_write_bytes, build_model_from_checkpoint
from utils.evaluator import check_input_channels, class_labels, data_kind, most_foreground_slices, predict_case
from utils.inference import resolve_device
from utils.trainer import EPOCH_LOG_COLUMNS, STEP_LOG_COLUMNS
from utils.visual import (
    PANEL_GAP, WHITE, class_colours, display_rgb, image_grid, legend, overlay, save_png, side_by_side, text_strip,
)

__all__ = [
    "STEP_LOG", "EPOCH_LOG", "CONFIG_FILE", "FIGURES_DIR", "DPI", "FigureItem",
    "read_run_csv", "load_step_log", "load_epoch_log", "load_run_config", "moving_average",
    "new_figure", "training_curves_figure", "save_figure", "load_figure_items", "annotated_grid", "prediction_grid",
    "load_model", "default_figure_path", "write_training_curves", "write_prediction_overlays",
]

STEP_LOG, EPOCH_LOG, CONFIG_FILE = "train_steps.csv", "epochs.csv", "config.json"
FIGURES_DIR = "figures"  # default output folder, inside the run directory / beside the checkpoint
DPI = 150
CURVES_FIGSIZE = (14.0, 3.6)  # three panels side by side: 2100 x 540 pixels at DPI
SMOOTH_WINDOW = 25  # steps of the trailing moving average over the step loss
MAX_CASES_NAMED = 10  # case names listed in an "unknown case" message


# ----------------------------------------------------------------------------------------------------------------
# Run logs
# ----------------------------------------------------------------------------------------------------------------
def _number(path: Path, line: int, column: str, text: str) -> float:
    """A CSV cell as float; an empty cell (not validated, ...) is NaN."""
    if not text.strip():
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise DataError(path, f"line {line}, column {column}: {text!r} is not a number") from None


def read_run_csv(path: str | Path, key: str, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Numeric ``columns`` (and ``key``) of a run log as float arrays, one entry per distinct ``key`` value in
    increasing order.

    A later row with the same key replaces an earlier one (a resumed run appends the steps after its checkpoint
    again). Raises DataError naming the file for a missing file, a missing column, a malformed row or no rows.
    """
    path = Path(path)
    columns = (key, *(name for name in columns if name != key))
    if not path.is_file():
        raise DataError(path, "run log not found (written by this codebase's trainer)")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataError(path, "empty file (no header)")
        missing = [name for name in columns if name not in header]
        if missing:
            raise DataError(path, f"missing column(s) {', '.join(missing)} (header: {','.join(header)})")
        positions = [header.index(name) for name in columns]
        rows: dict[float, list[float]] = {}
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(path, f"line {line}: {len(row)} fields, expected {len(header)} (truncated row?)")
            values = [_number(path, line, name, row[position]) for name, position in zip(columns, positions)]
            key_value = values[0]
            if not math.isfinite(key_value):
                raise DataError(path, f"line {line}: no {key}")
            rows[key_value] = values
    if not rows:
        raise DataError(path, "no data rows")
    table = np.array([rows[key_value] for key_value in sorted(rows)], dtype=np.float64)
    return {name: table[:, index] for index, name in enumerate(columns)}


def _existing_run_dir(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(run_dir, "run directory does not exist")
    return run_dir


def load_step_log(run_dir: str | Path, model_columns: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """``train_steps.csv`` of a run: arrays step, epoch, loss, lr and the model's ``model_columns`` (its logged
    scalars, by the CSV column the trainer gives them), last row per step."""
    return read_run_csv(_existing_run_dir(run_dir) / STEP_LOG, "step", (*STEP_LOG_COLUMNS, *model_columns))


def load_epoch_log(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """``epochs.csv`` of a run (last row per epoch; val_* NaN where not validated), or None when absent."""
    path = _existing_run_dir(run_dir) / EPOCH_LOG
    return read_run_csv(path, "epoch", EPOCH_LOG_COLUMNS) if path.exists() else None


def load_run_config(run_dir: str | Path) -> dict:
    """``config.json`` of a run ({} when absent); DataError when it exists but is not a JSON object."""
    path = _existing_run_dir(run_dir) / CONFIG_FILE
    if not path.exists():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"cannot read run configuration: {exc}") from exc
    if not isinstance(config, dict):
        raise DataError(path, "run configuration is not a JSON object")
    return config


# ----------------------------------------------------------------------------------------------------------------
# Curves (matplotlib)
# ----------------------------------------------------------------------------------------------------------------
def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (fewer at the start): same length as ``values``."""
    if window < 1:
        raise ValueError(f"smoothing window must be >= 1, got {window}")
    values = np.asarray(values, dtype=np.float64)
    sums = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def new_figure(figsize: tuple[float, float]) -> Figure:
    """An empty figure of ``figsize`` inches on matplotlib's Agg canvas (rendering never needs a display)."""
    figure = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def training_curves_figure(steps: Mapping[str, np.ndarray], epochs: Mapping[str, np.ndarray] | None = None,
                           smooth: int = SMOOTH_WINDOW) -> Figure:
    """Three panels: step loss with its moving average; epoch mean loss (from ``epochs``, else the mean of the
    steps of each epoch); validation DSC per epoch (when ``epochs`` has any)."""
    figure = new_figure(CURVES_FIGSIZE)
    step_axes, epoch_axes, dice_axes = figure.subplots(1, 3)
    step_axes.plot(steps["step"], steps["loss"], color="tab:blue", alpha=0.35, linewidth=0.8, label="loss")
    step_axes.plot(steps["step"], moving_average(steps["loss"], smooth), color="tab:blue",
                   label=f"moving average ({smooth} steps)")
    step_axes.set(xlabel="optimizer step", ylabel="training loss", title="loss per step")
    step_axes.legend(fontsize="small")

    if epochs is not None:
        epoch_index, epoch_loss = epochs["epoch"], epochs["mean_loss"]
    else:
        epoch_index = np.unique(steps["epoch"])
        epoch_loss = np.array([steps["loss"][steps["epoch"] == epoch].mean() for epoch in epoch_index])
    epoch_axes.plot(epoch_index, epoch_loss, marker="o", color="tab:orange")
    epoch_axes.set(xlabel="epoch", ylabel="mean training loss", title="loss per epoch")

    validated = None if epochs is None else np.isfinite(epochs["val_dice"])
    if validated is not None and validated.any():
        dice_axes.plot(epochs["epoch"][validated], epochs["val_dice"][validated], marker="o", color="tab:green")
        dice_axes.set(xlabel="epoch", ylabel="mean DSC", title="validation DSC")
    else:
        dice_axes.text(0.5, 0.5, f"no validation DSC in {EPOCH_LOG}", ha="center", va="center",
                       transform=dice_axes.transAxes)
        dice_axes.set(title="validation DSC", xticks=[], yticks=[])
    for axes in (step_axes, epoch_axes, dice_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and epochs are whole numbers
        axes.grid(alpha=0.3)
    return figure


def save_figure(figure: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Render ``figure`` to PNG (figsize * dpi pixels) and write it atomically; missing folders are created."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def write_training_curves(run_dir: str | Path, out: str | Path | None = None, smooth: int = SMOOTH_WINDOW,
                          dpi: int = DPI) -> Path:
    """Training curves of a run (``<run>/figures/training_curves.png`` unless ``out``)."""
    figure = training_curves_figure(load_step_log(run_dir), load_epoch_log(run_dir), smooth)
    return save_figure(figure, out or Path(run_dir) / FIGURES_DIR / "training_curves.png", dpi)


# ----------------------------------------------------------------------------------------------------------------
# Items of a data set
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FigureItem:
    """One row of an image figure: a volume slice or a 2-D image with its ground truth."""
    title: str
    image: np.ndarray  # grey [H, W] or RGB [3, H, W], float
    label: np.ndarray  # int64 [H, W]


def _split_selection(text: str) -> tuple[str, int | None]:
    """'case0001:30' -> ('case0001', 30); 'case0001' -> ('case0001', None)."""
    case, separator, index = text.rpartition(":")
    if not separator:
        return text, None
    try:
        return case, int(index)
    except ValueError:
        raise ValueError(f"case selection {text!r}: slice index {index!r} is not an integer (use CASE or "
                         f"CASE:SLICE)") from None


def load_figure_items(dataset: str, selections: Sequence[str], num_classes: int,
                      volume_path: str | None = None, list_dir: str | None = None,
                      split: str | None = None) -> list[FigureItem]:
    """Images of the evaluation split of ``dataset`` (defaults from its spec; ``split`` defaults to its test
    split). Volume sets: ``selections`` are 'CASE' (the slice with the most foreground) or 'CASE:SLICE'; image sets:
    image names. No selection: the split's first case. Unknown names and slice indices out of range are errors."""
    spec = get_dataset(dataset)
    data = spec.build(volume_path or spec.volume_path, list_dir or spec.list_dir, split or spec.test_split,
                      num_classes)
    index_of = {data.case_name(entry): index for index, entry in enumerate(data.entries)}
    volumes = spec.kind == "volume"
    items, loaded = [], {}
    for text in selections or [next(iter(index_of))]:
        case, slice_index = _split_selection(text) if volumes else (text, None)
        if case not in index_of:
            known = ", ".join(list(index_of)[:MAX_CASES_NAMED]) + (", ..." if len(index_of) > MAX_CASES_NAMED else "")
            raise DataError(data.list_path, f"no case {case!r} in this list (cases: {known})")
        if case not in loaded:
            item = data[index_of[case]]
            loaded[case] = (item["image"], item["label"])
        image, label = loaded[case]
        if not volumes:
            items.append(FigureItem(case, image, label))
            continue
        if slice_index is None:
            slice_index = most_foreground_slices(label, 1)[0]
        if not 0 <= slice_index < len(image):
            raise DataError(data.paths[index_of[case]], f"slice {slice_index} out of range: case {case} has "
                                                        f"{len(image)} slices (0..{len(image) - 1})")
        items.append(FigureItem(f"{case} slice {slice_index}", image[slice_index], label[slice_index]))
    return items


# ----------------------------------------------------------------------------------------------------------------
# Image grids
# ----------------------------------------------------------------------------------------------------------------
def annotated_grid(rows: Sequence[Sequence[np.ndarray]], row_titles: Sequence[str], column_titles: Sequence[str],
                   title: str, legend_names: Sequence[str], legend_colours: np.ndarray,
                   gap: int = PANEL_GAP) -> np.ndarray:
    """uint8 RGB figure: a title line, a line of column titles, per row a line with its title above its panels
    (cells of the largest panel's size, ``gap`` pixels apart), then ``gap`` white lines and the legend.

    Height: ``2 * TEXT_HEIGHT + R * (TEXT_HEIGHT + h) + gap + legend_height(len(legend_names), width)``; width:
    ``C * w + (C - 1) * gap`` for R rows, C columns, h x w the largest panel.
    """
    if len(row_titles) != len(rows) or any(len(row) != len(column_titles) for row in rows):
        raise ValueError(f"annotated_grid: {len(rows)} rows of {[len(r) for r in rows]} panels do not match "
                         f"{len(row_titles)} row titles and {len(column_titles)} column titles")
    body = image_grid(rows, gap)
    cell_height = max(panel.shape[0] for row in rows for panel in row)
    cell_width = max(panel.shape[1] for row in rows for panel in row)
    width = body.shape[1]
    header = side_by_side(*(text_strip(name, cell_width, centre=True) for name in column_titles), gap=gap)
    parts = [text_strip(title, width), header]
    for index, row_title in enumerate(row_titles):
        top = index * (cell_height + gap)
        parts += [text_strip(row_title, width), body[top:top + cell_height]]
    parts += [np.full((gap, width, 3), WHITE, dtype=np.uint8), legend(legend_names, legend_colours, width)]
    return np.concatenate(parts, axis=0)


def prediction_grid(items: Sequence[FigureItem], predictions: Sequence[np.ndarray], class_names: Sequence[str],
                    title: str) -> np.ndarray:
    """Figure with one row per item: [image | ground truth | prediction] overlays and a class legend."""
    num_classes = len(class_names) + 1
    rows = [[display_rgb(item.image, item.label.shape), overlay(item.image, item.label, num_classes),
             overlay(item.image, prediction, num_classes)] for item, prediction in zip(items, predictions)]
    return annotated_grid(rows, [item.title for item in items], ["image", "ground truth", "prediction"], title,
                          class_names, class_colours(num_classes)[1:])


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint figures
# ----------------------------------------------------------------------------------------------------------------
def load_model(checkpoint: str | Path, dataset: str, device: str) -> torch.nn.Module:
    """A checkpoint's model in eval mode on ``device``; CheckpointError unless it takes the data set's images."""
    model, _ = build_model_from_checkpoint(checkpoint, {}, map_location="cpu")
    check_input_channels(checkpoint, model, dataset)
    return model.to(resolve_device(device)).eval()


def default_figure_path(checkpoint: str | Path, name: str) -> Path:
    """``<checkpoint dir>/figures/<name>``."""
    return Path(checkpoint).resolve().parent / FIGURES_DIR / name


def write_prediction_overlays(checkpoint: str | Path, dataset: str, cases: Sequence[str] = (),
                              out: str | Path | None = None, volume_path: str | None = None,
                              list_dir: str | None = None, split: str | None = None, device: str = "auto") -> Path:
    """Ground truth beside prediction for the selected images, with a class legend;
    ``<checkpoint dir>/figures/predictions.png`` unless ``out``."""
    model = load_model(checkpoint, dataset, device)
    items = load_figure_items(dataset, cases, model.num_classes, volume_path, list_dir, split)
    kind = data_kind(dataset)
    predictions = [predict_case(model, item.image, kind=kind, img_size=model.img_size) for item in items]
    spec = get_dataset(dataset)
    names = class_labels(spec.class_names, model.num_classes)
    figure = prediction_grid(items, predictions, names, f"{dataset} {split or spec.test_split}: "
                                                        f"ground truth and prediction of {checkpoint}")
    path = Path(out) if out else default_figure_path(checkpoint, "predictions.png")
    save_png(path, figure)
    return path

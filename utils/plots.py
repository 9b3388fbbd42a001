"""Analysis figures: W-LD's memory K over training, training curves, DMW-LA memory-cluster maps, prediction overlays.

Curves come from a run directory's ``train_steps.csv`` / ``epochs.csv`` (written by ``utils.trainer``; after a
resume a step or epoch may appear twice and the last row counts) and are drawn with matplotlib's Agg canvas (no
display, no pyplot state). Image grids are assembled pixel-exactly with numpy (``utils.visual``), so every panel keeps
the resolution it was computed at. Every PNG is written atomically (temporary name, then ``os.replace``).

    from utils import plots
    plots.write_k_curve("runs/synapse_small_256")                      # -> runs/.../figures/k_curve.png
    plots.write_cluster_maps("runs/x/last.pth", "synapse", ["case0001:70"], layer=3)
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
from datasets.common import DataError
from utils.checkpoint import atomic_write_bytes, build_model_from_checkpoint
from utils.evaluator import check_input_channels, class_labels, data_kind, most_foreground_slices, predict_case
from utils.inference import eval_mode, model_device, network_input, resolve_device
from utils.trainer import EPOCH_LOG_COLUMNS, STEP_LOG_COLUMNS
from utils.visual import (
    PANEL_GAP, WHITE, class_colours, display_rgb, image_grid, legend, overlay, save_png, side_by_side, text_strip,
)

__all__ = [
    "STEP_LOG", "EPOCH_LOG", "CONFIG_FILE", "FigureItem", "MemoryLayer",
    "read_run_csv", "load_step_log", "load_epoch_log", "load_run_config", "moving_average",
    "k_curve_figure", "training_curves_figure", "save_figure",
    "memory_layer_table", "cluster_assignments", "upsample_nearest", "load_figure_items",
    "cluster_grid", "prediction_grid", "annotated_grid",
    "write_k_curve", "write_training_curves", "write_cluster_maps", "write_prediction_overlays",
    "describe_memory_layers",
]

STEP_LOG, EPOCH_LOG, CONFIG_FILE = "train_steps.csv", "epochs.csv", "config.json"
FIGURES_DIR = "figures"  # default output folder, inside the run directory / beside the checkpoint
DPI = 150
K_CURVE_FIGSIZE = (6.0, 3.5)  # inches: 900 x 525 pixels at DPI
CURVES_FIGSIZE = (14.0, 3.6)  # three panels side by side: 2100 x 540 pixels at DPI
SMOOTH_WINDOW = 25  # steps of the trailing moving average over the step loss
CLUSTER_MAP_ALPHA = 0.5  # cluster colour over the image in the cluster map
HIGHLIGHT_ALPHA = 0.3  # cluster colour over the pixels a cluster panel highlights
DIM_FACTOR = 0.25  # brightness of the pixels a cluster panel does not highlight
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


K_COLUMN = "memory_k"  # the column Sim-MPNet's logged scalar wld/memory_k gets in train_steps.csv


def load_step_log(run_dir: str | Path, model_columns: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """``train_steps.csv`` of a run: arrays step, epoch, loss, lr and the model's ``model_columns`` (its logged
    scalars, e.g. memory_k), last row per step."""
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


def _config_value(config: Mapping, section: str, name: str) -> int | None:
    value = config.get(section, {}).get(name) if isinstance(config.get(section), dict) else None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


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


def _new_figure(figsize: tuple[float, float]) -> Figure:
    figure = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(figure)  # Agg canvas: rendering never needs a display
    return figure


def k_curve_figure(steps: Mapping[str, np.ndarray], pool_size: int | None = None,
                   wld_start_epoch: int | None = None) -> Figure:
    """Memory K after every optimizer step; with ``pool_size`` (M) the band [M/4, 3M/4] that W-LD keeps K in and
    its reset value M/2; with ``wld_start_epoch`` the first step of that epoch."""
    figure = _new_figure(K_CURVE_FIGSIZE)
    axes = figure.add_subplot()
    axes.plot(steps["step"], steps[K_COLUMN], drawstyle="steps-post", color="tab:blue", label="K")
    if pool_size is not None:
        axes.axhspan(pool_size / 4, 3 * pool_size / 4, color="tab:green", alpha=0.15,
                     label=f"[M/4, 3M/4], M = {pool_size}")
        axes.axhline(pool_size // 2, color="tab:green", linestyle="--", linewidth=1, label="M/2 (reset)")
        axes.set_ylim(0, pool_size)
    if wld_start_epoch is not None and np.any(steps["epoch"] >= wld_start_epoch):
        first = steps["step"][np.argmax(steps["epoch"] >= wld_start_epoch)]
        axes.axvline(first, color="grey", linestyle=":", label=f"W-LD starts (epoch {wld_start_epoch})")
    axes.set(xlabel="optimizer step", ylabel="memory K (columns replaced per cluster)",
             title="W-LD memory K over training")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    return figure


def training_curves_figure(steps: Mapping[str, np.ndarray], epochs: Mapping[str, np.ndarray] | None = None,
                           smooth: int = SMOOTH_WINDOW) -> Figure:
    """Three panels: step loss with its moving average; epoch mean loss (from ``epochs``, else the mean of the
    steps of each epoch); validation DSC per epoch (when ``epochs`` has any)."""
    figure = _new_figure(CURVES_FIGSIZE)
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


def write_k_curve(run_dir: str | Path, out: str | Path | None = None, dpi: int = DPI) -> Path:
    """K curve of a run (``<run>/figures/k_curve.png`` unless ``out``); M and the W-LD start from config.json."""
    config = load_run_config(run_dir)
    figure = k_curve_figure(load_step_log(run_dir, (K_COLUMN,)), _config_value(config, "model_config", "pool_size"),
                            _config_value(config, "args", "wld_start_epoch"))
    return save_figure(figure, out or Path(run_dir) / FIGURES_DIR / "k_curve.png", dpi)


def write_training_curves(run_dir: str | Path, out: str | Path | None = None, smooth: int = SMOOTH_WINDOW,
                          dpi: int = DPI) -> Path:
    """Training curves of a run (``<run>/figures/training_curves.png`` unless ``out``)."""
    figure = training_curves_figure(load_step_log(run_dir), load_epoch_log(run_dir), smooth)
    return save_figure(figure, out or Path(run_dir) / FIGURES_DIR / "training_curves.png", dpi)


# ----------------------------------------------------------------------------------------------------------------
# DMW-LA layers and their cluster assignments
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryLayer:
    """One DMW-LA layer: its index in ``model.memory_layers()``, module name and input feature map."""
    index: int
    name: str
    channels: int
    height: int
    width: int
    num_k: int

    def describe(self) -> str:
        return (f"{self.index}: {self.name} ({self.channels} channels, {self.height}x{self.width} map, "
                f"{self.num_k} clusters)")


def _run_with_hooks(model: torch.nn.Module, layers: Sequence[torch.nn.Module], inputs: torch.Tensor) -> list:
    """Eval-mode forward of ``inputs``; returns per layer the input map(s) it received (eval never changes the
    memory, and the model's modes are restored)."""
    received: list[list[torch.Tensor]] = [[] for _ in layers]
    handles = [layer.register_forward_hook(lambda module, args, output, seen=seen: seen.append(args[0]))
               for layer, seen in zip(layers, received)]
    try:
        with eval_mode(model), torch.inference_mode():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return received


def memory_layers_of(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's memory-attention layers; ValueError for a model without any (e.g. a U-Net baseline)."""
    layers = model.memory_layers() if hasattr(model, "memory_layers") else []
    if not layers:
        raise ValueError(f"{getattr(model, 'arch', '') or type(model).__name__} has no memory (DMW-LA) layers: the "
                         "layer and cluster figures apply to Sim-MPNet checkpoints")
    return layers


def memory_layer_table(model: torch.nn.Module) -> list[MemoryLayer]:
    """The model's DMW-LA layers in ``memory_layers()`` order, with their feature-map sizes at the model's input
    size (found by one eval forward of a blank image)."""
    layers = memory_layers_of(model)
    names = {id(module): name for name, module in model.named_modules()}
    blank = torch.zeros(1, model.in_chans, model.img_size, model.img_size, device=model_device(model))
    maps = _run_with_hooks(model, layers, blank)
    return [MemoryLayer(index, names[id(layer)], *seen[0].shape[1:], layer.num_k)
            for index, (layer, seen) in enumerate(zip(layers, maps))]


def _checked_layer(model: torch.nn.Module, layer_index: int) -> torch.nn.Module:
    layers = memory_layers_of(model)
    if not 0 <= layer_index < len(layers):
        table = "; ".join(layer.describe() for layer in memory_layer_table(model))
        raise ValueError(f"DMW-LA layer index {layer_index} out of range [0, {len(layers) - 1}]; this model's "
                         f"layers: {table}")
    layer = layers[layer_index]
    if layer.in_warmup:
        raise ValueError(f"DMW-LA layer {layer_index} is still in its memory warm-up ({int(layer.warmup_step)} of "
                         f"{layer.warmup_iters} forwards): its bank has no clusters yet")
    return layer


def cluster_assignments(model: torch.nn.Module, layer_index: int, inputs: torch.Tensor) -> np.ndarray:
    """Memory cluster of every token of DMW-LA layer ``layer_index`` for a batch ``inputs`` [B, in_chans, S, S]:
    int64 [B, h, w] (h x w the layer's feature map). The layer's input is taken by a forward hook in eval mode;
    the cluster is the prototype of highest cosine similarity to the token's theta feature, as in the layer."""
    layer = _checked_layer(model, layer_index)
    (seen,) = _run_with_hooks(model, [layer], inputs)
    if len(seen) != 1:
        raise RuntimeError(f"DMW-LA layer {layer_index} ran {len(seen)} times in one forward; expected once")
    feature_map = seen[0]
    with torch.inference_mode():
        assignment = layer.assign_clusters(feature_map)
    return assignment.reshape(feature_map.shape[0], *feature_map.shape[-2:]).cpu().numpy()


def upsample_nearest(assignment: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour upsampling of a 2-D map: output pixel (i, j) takes cell (i * h // H, j * w // W)."""
    rows = np.arange(shape[0]) * assignment.shape[0] // shape[0]
    columns = np.arange(shape[1]) * assignment.shape[1] // shape[1]
    return assignment[rows[:, None], columns[None, :]]


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


def cluster_colours(num_k: int) -> np.ndarray:
    """uint8 [num_k, 3]: cluster c is drawn in the colour of class c + 1."""
    return class_colours(num_k + 1)[1:]


def _highlight(shown: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """``shown`` tinted with ``colour`` where ``mask``, dimmed elsewhere."""
    tinted = (1.0 - HIGHLIGHT_ALPHA) * shown + HIGHLIGHT_ALPHA * colour.astype(np.float64)
    return np.round(np.where(mask[..., None], tinted, DIM_FACTOR * shown)).astype(np.uint8)


def cluster_grid(titles: Sequence[str], images: np.ndarray, assignments: np.ndarray, num_k: int,
                 title: str) -> np.ndarray:
    """Figure with one row per image: [image | cluster map | cluster 1 | ... | cluster num_k], each S x S.

    ``images`` [B, C, S, S] (the network inputs, C = 1 grey or 3 RGB), ``assignments`` [B, h, w] token clusters,
    upsampled (nearest) to S x S. The cluster map blends each pixel with its cluster's colour; cluster c's panel
    shows the pixels assigned to c (its receptive field) tinted in c's colour and dims the others.
    """
    colours = cluster_colours(num_k)
    rows = []
    for image, assignment in zip(images, assignments):
        image = image[0] if len(image) == 1 else image
        shown = display_rgb(image)
        pixels = upsample_nearest(assignment, shown.shape[:2])
        cluster_map = overlay(image, pixels + 1, num_k + 1, alpha=CLUSTER_MAP_ALPHA)
        rows.append([shown, cluster_map, *(_highlight(shown, pixels == c, colours[c]) for c in range(num_k))])
    names = [f"cluster {c + 1}" for c in range(num_k)]
    return annotated_grid(rows, titles, ["image", "clusters", *names], title, names, colours)


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
def _load_model(checkpoint: str | Path, dataset: str, device: str) -> torch.nn.Module:
    model, _ = build_model_from_checkpoint(checkpoint, {}, map_location="cpu")
    check_input_channels(checkpoint, model, dataset)
    return model.to(resolve_device(device)).eval()


def _default_figure_path(checkpoint: str | Path, name: str) -> Path:
    return Path(checkpoint).resolve().parent / FIGURES_DIR / name


def describe_memory_layers(checkpoint: str | Path, device: str = "cpu") -> str:
    """One line per DMW-LA layer of a checkpoint's model: index, module name, feature map, clusters."""
    model, _ = build_model_from_checkpoint(checkpoint, {}, map_location="cpu")
    model.to(resolve_device(device))
    return "\n".join(layer.describe() for layer in memory_layer_table(model))


def write_cluster_maps(checkpoint: str | Path, dataset: str, cases: Sequence[str] = (), layer: int = 0,
                       out: str | Path | None = None, volume_path: str | None = None, list_dir: str | None = None,
                       split: str | None = None, device: str = "auto") -> Path:
    """Memory-cluster maps of DMW-LA layer ``layer`` for the selected images (see :func:`load_figure_items`);
    ``<checkpoint dir>/figures/clusters_layer<layer>.png`` unless ``out``. The model is used in eval mode only,
    so its memory is not changed."""
    model = _load_model(checkpoint, dataset, device)
    memory_layer = _checked_layer(model, layer)
    items = load_figure_items(dataset, cases, model.num_classes, volume_path, list_dir, split)
    images = np.stack([network_input(item.image, model.img_size) for item in items])
    assignments = cluster_assignments(model, layer, torch.from_numpy(images).to(model_device(model)))
    name = next(name for name, module in model.named_modules() if module is memory_layer)
    title = (f"DMW-LA layer {layer}: {name} ({assignments.shape[1]}x{assignments.shape[2]} map, "
             f"{memory_layer.num_k} clusters)")
    figure = cluster_grid([item.title for item in items], images, assignments, memory_layer.num_k, title)
    path = Path(out) if out else _default_figure_path(checkpoint, f"clusters_layer{layer}.png")
    save_png(path, figure)
    return path


def write_prediction_overlays(checkpoint: str | Path, dataset: str, cases: Sequence[str] = (),
                              out: str | Path | None = None, volume_path: str | None = None,
                              list_dir: str | None = None, split: str | None = None, device: str = "auto") -> Path:
    """Ground truth beside prediction for the selected images, with a class legend;
    ``<checkpoint dir>/figures/predictions.png`` unless ``out``."""
    model = _load_model(checkpoint, dataset, device)
    items = load_figure_items(dataset, cases, model.num_classes, volume_path, list_dir, split)
    kind = data_kind(dataset)
    predictions = [predict_case(model, item.image, kind=kind, img_size=model.img_size) for item in items]
    spec = get_dataset(dataset)
    names = class_labels(spec.class_names, model.num_classes)
    figure = prediction_grid(items, predictions, names, f"{dataset} {split or spec.test_split}: "
                                                        f"ground truth and prediction of {checkpoint}")
    path = Path(out) if out else _default_figure_path(checkpoint, "predictions.png")
    save_png(path, figure)
    return path

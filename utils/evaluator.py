"""Case-wise evaluation: one code path for the test scripts and for validation during training.

``evaluate_model`` predicts every case of a dataset and scores it with ``utils.metrics.case_metrics``. A case is
what the data set's spec says (``get_dataset(name).kind``): a grey volume [D, H, W] (``'volume'``,
``predict_volume``) or one image [3, H, W] with a 2-D label (``'image'``, ``predict_image``). ``evaluate`` (the test
scripts' entry) adds checkpoint loading, the printed tables and the output files (metrics.csv, summary.json, PNG
overlays, NIfTI for volumes, and report.html: the results page of utils.report).
"""
from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from datasets import get_dataset
from datasets.io.nifti import label_nifti_bytes, nifti_bytes, volume_nifti_bytes
from datasets.registry import DATA_KINDS
from utils.checkpoint import (
    CheckpointError, atomic_write_bytes, atomic_write_json, atomic_write_text, build_model_from_checkpoint,
    checkpoint_identity, describe_checkpoint, json_safe,
)
from utils.config import EvalConfig, RunOptions, saved_options
from utils.inference import model_device, predict_image, predict_volume, resolve_device
from utils.metrics import METRIC_NAMES, case_metrics, metric_columns, summarize, unpredicted_note
from utils.runlog import CreatedPaths, amp_dtype, format_table, logger, removed_on_failure, run_logging, seed_everything
from utils.batch_context import model_context, with_test_context
from utils.report import REPORT_HTML, write_test_report
from utils.model_input import model_input_conversion, with_model_input
from utils.visual import image_grid, overlay, save_png, side_by_side

CSV_COLUMNS = ("case", "class", *METRIC_NAMES)  # in pixels; in mm: metric_columns("mm")
DISTANCE_UNIT_WORDS = {"pixel": "px", "mm": "mm"}
NIFTI_SUFFIXES = {"image": "_img.nii.gz", "prediction": "_pred.nii.gz", "label": "_gt.nii.gz"}

# on_case(case, image, prediction, label, context): context = the item's entries beyond image/label/name
CaseCallback = Callable[[str, np.ndarray, np.ndarray, np.ndarray, dict], None]


def class_labels(class_names: Sequence[str], num_classes: int) -> list[str]:
    """Foreground class names; generic names when the class count was overridden."""
    if len(class_names) == num_classes - 1:
        return list(class_names)
    return [f"class_{index}" for index in range(1, num_classes)]


def data_kind(dataset: str) -> str:
    """The data set's kind: 'volume' or 'image'."""
    return get_dataset(dataset).kind


# an evaluation item's own entries (``spacing``: its voxel size per axis, in mm, where the set has geometry); any
# others are model context
ITEM_KEYS = ("image", "label", "case_name", "spacing")


def predict_case(model: torch.nn.Module, image: np.ndarray, *, kind: str, img_size: int, batch_size: int = 16,
                 device: torch.device | None = None, amp: torch.dtype | None = None,
                 context: dict | None = None, tta: str | None = None,
                 return_probabilities: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Labels of one case: a volume [D, H, W] or slice [H, W] (``kind='volume'``: ``predict_volume`` in batches of
    ``batch_size`` slices) or an image [C, H, W] (``kind='image'``: ``predict_image``). ``context``: extra batch
    entries for the model (e.g. a support set), see ``utils.inference.forward_inputs``; ``tta``: None / 'none' or
    'flip' (``utils.inference.class_scores``); ``return_probabilities``: ``(labels, probabilities [K, ...])``."""
    if kind not in DATA_KINDS:
        raise ValueError(f"kind must be one of {', '.join(DATA_KINDS)}, got {kind!r}")
    if kind == "volume":
        return predict_volume(model, image, img_size, batch_size=batch_size, device=device, amp_dtype=amp,
                              context=context, tta=tta, return_probabilities=return_probabilities)
    return predict_image(model, image, img_size, device=device, amp_dtype=amp, context=context, tta=tta,
                         return_probabilities=return_probabilities)


def context_entries(item: dict) -> dict:
    """The entries of an evaluation item beyond image, label and name: a data set's context for the model (e.g. a
    support set)."""
    return {key: value for key, value in item.items() if key not in ITEM_KEYS}


def item_context(item: dict, model: torch.nn.Module, kind: str) -> dict:
    """An item's context entries as tensors on the model's device. An image case is one forward, so its entries
    become a batch of one (a leading axis of 1, as a collated training batch has); a volume's entries are passed
    as they are with every batch of its slices (the same context for each slice)."""
    entries = {key: torch.as_tensor(value) for key, value in context_entries(item).items()}
    return {key: (value[None] if kind == "image" else value).to(model_device(model)) for key, value in entries.items()}


def item_spacing(item: dict, distance_unit: str) -> np.ndarray | None:
    """The voxel spacing the distances of ``item`` are measured with: None in pixels, the item's ``spacing`` (one
    value per axis of its label map) in millimetres."""
    if distance_unit != "mm":
        return None
    spacing = item.get("spacing")
    if spacing is None:
        raise ValueError(f"case {item['case_name']}: HD95 / ASD in mm need the voxel spacing, which this data set's "
                         f"items do not carry; use --distance_unit pixel")
    return np.asarray(spacing, dtype=np.float64)


def check_input_channels(checkpoint: str | Path, model: torch.nn.Module, dataset: str) -> None:
    """CheckpointError unless the model takes the data set's images: its channel count (1 grey, 3 RGB), or 1 for a
    colour set (converted to grey, utils.model_input)."""
    try:
        model_input_conversion(get_dataset(dataset), model)
    except ValueError as exc:
        raise CheckpointError(checkpoint, str(exc)) from exc


def evaluate_model(model: torch.nn.Module, dataset: torch.utils.data.Dataset, *, kind: str, img_size: int,
                   num_classes: int, protocol: str = "transunet", batch_size: int = 16,
                   device: torch.device | None = None, amp: torch.dtype | None = None,
                   on_case: CaseCallback | None = None, desc: str = "evaluate",
                   tta: str | None = None, distance_unit: str = "pixel") -> tuple[dict[str, np.ndarray], dict]:
    """Predict and score every case of ``dataset``: volumes (``kind='volume'``: ``predict_volume`` in batches of
    ``batch_size`` slices) or 2-D images (``kind='image'``: ``predict_image``, one image per forward); ``tta='flip'``
    averages the probabilities over mirrored inputs (``utils.inference.class_scores``). ``distance_unit``: HD95 and
    ASD in voxel steps ('pixel') or in millimetres ('mm': from each item's ``spacing`` entry, ValueError for an item
    without one).

    Returns ``(per_case, summary)``: ``per_case[case_name]`` is the ``[num_classes-1, 4]`` metric array of
    ``case_metrics`` (on the 3-D or 2-D label map); ``summary`` is ``utils.metrics.summarize(per_case)``.
    ``on_case(case, image, prediction, label, context)`` is called after each case (used to write NIfTI / overlays;
    ``context``: the item's context entries, e.g. its supports). The
    model's train/eval modes are kept (the predictors restore them).
    """
    if kind not in DATA_KINDS:  # before the first case is loaded
        raise ValueError(f"kind must be one of {', '.join(DATA_KINDS)}, got {kind!r}")
    metric_columns(distance_unit)  # a bad unit is an error before the first case, too
    per_case: dict[str, np.ndarray] = {}
    for index in tqdm(range(len(dataset)), desc=desc, leave=False, disable=None):
        item = dataset[index]
        image, label, case = item["image"], item["label"], item["case_name"]
        prediction = predict_case(model, image, kind=kind, img_size=img_size, batch_size=batch_size, device=device,
                                  amp=amp, context=item_context(item, model, kind), tta=tta)
        per_case[case] = case_metrics(prediction, label, num_classes, protocol=protocol,
                                      spacing=item_spacing(item, distance_unit))
        if on_case is not None:
            on_case(case, image, prediction, label, context_entries(item))
    return per_case, summarize(per_case)


# ----------------------------------------------------------------------------------------------------------------
# Output files
# ----------------------------------------------------------------------------------------------------------------
def metrics_csv_text(per_case: dict[str, np.ndarray], labels: Sequence[str], distance_unit: str = "pixel") -> str:
    """CSV with one row per (case, class): case, class, dice, hd95, jaccard, asd (in mm: hd95_mm, asd_mm)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("case", "class", *metric_columns(distance_unit)))
    for case, metrics in per_case.items():
        for label, row in zip(labels, metrics):
            writer.writerow([case, label, *(f"{value:.6g}" for value in row)])
    return buffer.getvalue()


def summary_record(summary: dict, labels: Sequence[str], protocol: str, checkpoint: str | None,
                   num_cases: int, distance_unit: str = "pixel") -> dict:
    """JSON-ready summary: means, per-class metrics by class name, protocol, checkpoint path, the unit of HD95 and
    ASD (``distance_unit``: 'pixel' or 'mm')."""
    per_class = [{"class": label, **{name: stats[name] for name in METRIC_NAMES}}
                 for label, stats in zip(labels, summary["per_class"])]
    means = {f"mean_{name}": summary[f"mean_{name}"] for name in METRIC_NAMES}
    return {**means, "per_class": per_class, "protocol": protocol, "distance_unit": distance_unit,
            "checkpoint": checkpoint, "num_cases": num_cases}


def metric_tables(per_case: dict[str, np.ndarray], summary: dict, labels: Sequence[str],
                  distance_unit: str = "pixel") -> str:
    """Per-case table (class-averaged metrics) and per-class table (case-averaged) with the overall mean; the
    columns named as in metrics.csv (the distances' unit in their names in mm)."""
    columns = metric_columns(distance_unit)
    header = ["case", *columns]
    case_rows = [[case, *_nan_mean_over_classes(metrics)] for case, metrics in per_case.items()]
    class_rows = [[label, *(stats[name] for name in METRIC_NAMES)]
                  for label, stats in zip(labels, summary["per_class"])]
    class_rows.append(["mean", *(summary[f"mean_{name}"] for name in METRIC_NAMES)])
    return format_table(header, case_rows) + "\n\n" + format_table(["class", *columns], class_rows)


def _nan_mean_over_classes(metrics: np.ndarray) -> np.ndarray:
    """Mean over classes ignoring NaN (strict protocol); all-NaN columns stay NaN without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(metrics, axis=0)


def save_case_nifti(directory: Path, case: str, image: np.ndarray, prediction: np.ndarray, label: np.ndarray,
                    created: CreatedPaths, original_grid: Callable | None = None, num_classes: int = 256) -> None:
    """``<case>_img.nii.gz``, ``<case>_pred.nii.gz``, ``<case>_gt.nii.gz`` (written atomically): on the case's original
    grid with its affine where the data set maps it back (``DatasetSpec.original_grid``; the image with the labels'
    nearest-neighbour mapping), else axes reversed with unit spacing (the release's files)."""
    for key, volume in (("image", image), ("prediction", prediction), ("label", label)):
        mapped = None if original_grid is None else original_grid(case, volume)
        if mapped is None:
            payload = nifti_bytes(volume)
        elif key == "image":
            payload = volume_nifti_bytes(*mapped)
        else:
            payload = label_nifti_bytes(mapped[0], mapped[1], None, num_classes)
        atomic_write_bytes(created.track(directory / f"{case}{NIFTI_SUFFIXES[key]}"), payload)


def most_foreground_slices(label: np.ndarray, count: int) -> list[int]:
    """Indices of the ``count`` slices with the most labelled foreground pixels (ties: lower index first)."""
    volume = label if label.ndim == 3 else label[None]
    foreground = (volume > 0).reshape(volume.shape[0], -1).sum(axis=1)
    order = np.argsort(-foreground, kind="stable")
    return sorted(int(i) for i in order[:count])


def gt_pred_panel(image: np.ndarray, label: np.ndarray, prediction: np.ndarray, num_classes: int) -> np.ndarray:
    """uint8 RGB (ground truth | prediction) overlays of one slice."""
    return side_by_side(overlay(image, label, num_classes), overlay(image, prediction, num_classes))


def save_case_overlays(directory: Path, case: str, image: np.ndarray, prediction: np.ndarray, label: np.ndarray,
                       num_classes: int, count: int, created: CreatedPaths) -> list[Path]:
    """PNG (ground truth | prediction) of the ``count`` slices of a volume with the most foreground:
    ``<case>_slice<NNN>.png``; returns their paths."""
    volumes = [v if v.ndim == 3 else v[None] for v in (image, prediction, label)]
    paths = []
    for index in most_foreground_slices(volumes[2], count):
        panel = gt_pred_panel(volumes[0][index], volumes[2][index], volumes[1][index], num_classes)
        paths.append(created.track(directory / f"{case}_slice{index:03d}.png"))
        save_png(paths[-1], panel)
    return paths


def save_image_overlay(directory: Path, case: str, image: np.ndarray, prediction: np.ndarray, label: np.ndarray,
                       num_classes: int, created: CreatedPaths,
                       references: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> Path:
    """PNG (ground truth | prediction) of a 2-D image case (RGB [3, H, W] shown per-channel min-max scaled):
    ``<case>.png`` (returned); ``references`` (image, label) pairs the prediction was made from (a support set) go
    in a second row, each with its label."""
    panel = gt_pred_panel(image, label, prediction, num_classes)
    if references:
        panel = image_grid([[panel], [side_by_side(*(overlay(ref_image, ref_label, num_classes)
                                                     for ref_image, ref_label in references))]])
    path = created.track(directory / f"{case}.png")
    save_png(path, panel)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Test-script entry
# ----------------------------------------------------------------------------------------------------------------
def requested_architecture(config: EvalConfig) -> dict:
    """Architecture settings given on the command line (None = take the checkpoint's)."""
    return {"num_classes": config.num_classes, **config.model_options}


def build_eval_dataset(config: EvalConfig | RunOptions, split: str) -> torch.utils.data.Dataset:
    """Evaluation dataset (volumes or images) of ``split`` (a list name in --list_dir) under --volume_path."""
    return get_dataset(config.dataset).build(config.volume_path, config.list_dir, split, config.num_classes,
                                             seed=config.seed)


def evaluation_distance_unit(config: EvalConfig) -> str:
    """The unit of HD95 / ASD: ``--distance_unit``, else the data set's (mm where its items carry a spacing)."""
    return config.distance_unit or get_dataset(config.dataset).distance_unit


def check_output_options(config: EvalConfig, kind: str) -> None:
    """ValueError for output options that do not apply to the data kind: NIfTI is a volume format, and a 2-D
    image has no spacing or orientation to record, so ``--is_savenii`` is refused for image data sets (rather than
    skipped, so that a run asked for NIfTI files never ends without them unnoticed)."""
    if config.is_savenii and kind == "image":
        raise ValueError(f"--is_savenii writes NIfTI volumes, but {config.dataset} holds 2-D images; use "
                         f"--save-overlays 1 for PNG overlays of the predictions")


def evaluate(config: EvalConfig) -> dict:
    """Evaluate ``config.checkpoint`` on the test list; write metrics.csv / summary.json (and NIfTI / overlays).

    Input errors (options, data, checkpoint) are raised before or during the run; files created by a failed run are
    removed. Returns the summary record written to summary.json.
    """
    kind = data_kind(config.dataset)
    check_output_options(config, kind)
    distance_unit = evaluation_distance_unit(config)
    seed_everything(config.seed, bool(config.deterministic))
    device = resolve_device(config.device)
    dataset = build_eval_dataset(config, config.test_list)
    model, checkpoint = build_model_from_checkpoint(config.checkpoint, requested_architecture(config),
                                                    map_location="cpu", arch=config.model)
    check_input_channels(config.checkpoint, model, config.dataset)
    checkpoint_line = f"{config.checkpoint} ({describe_checkpoint(checkpoint)})"  # which state was evaluated
    model.to(device)
    img_size = model.img_size
    dataset = with_test_context(dataset, config, model.arch, saved_options(checkpoint), img_size, str(device),
                                str(config.checkpoint))
    dataset = with_model_input(dataset, get_dataset(config.dataset), model, model_context(model.arch))
    context_info = getattr(dataset, "context_info", None)
    labels = class_labels(config.class_names, config.num_classes)
    output_dir = Path(config.output_dir)

    with removed_on_failure() as created:
        created.mkdir(output_dir)
        with run_logging(created.track(output_dir / "log.txt")):
            for note in config.notes:
                logger.info(note)
            logger.info("evaluating %s on %d %ss of %s (%s protocol, HD95/ASD in %s, img_size %d, device %s, tta %s)",
                        checkpoint_line, len(dataset), kind, config.test_list, config.metrics, distance_unit,
                        img_size, device, config.tta)
            if context_info:
                logger.info("batch context: %s", context_info)
            conversion = model_input_conversion(get_dataset(config.dataset), model)
            if conversion is not None:
                logger.info("model input: %s", conversion.describe())
            writes_files = config.is_savenii or config.save_overlays
            overlays: dict[str, list[Path]] = {}  # case -> its overlay PNGs, for the results page
            on_case = _case_writer(config, kind, output_dir, created, getattr(dataset, "context_pairs", None),
                                   overlays) if writes_files else None
            per_case, summary = evaluate_model(model, dataset, kind=kind, img_size=img_size,
                                               num_classes=config.num_classes, protocol=config.metrics,
                                               batch_size=config.batch_size, device=device, amp=amp_dtype(config.amp),
                                               on_case=on_case, desc="test", tta=config.tta,
                                               distance_unit=distance_unit)
            record = {**summary_record(summary, labels, config.metrics, str(config.checkpoint), len(per_case),
                                       distance_unit), "checkpoint_state": checkpoint_identity(checkpoint),
                      "tta": config.tta, **({"context": context_info} if context_info else {})}
            csv_text = metrics_csv_text(per_case, labels, distance_unit)
            atomic_write_text(created.track(output_dir / "metrics.csv"), csv_text)
            atomic_write_json(created.track(output_dir / "summary.json"), record)
            case_notes = getattr(dataset, "case_notes", None)  # per-case context, e.g. a query's supports
            write_test_report(created.track(output_dir / REPORT_HTML), record=json_safe(record), metrics_csv=csv_text,
                              run=report_facts(config, model.arch, kind, img_size, device, len(per_case),
                                               describe_checkpoint(checkpoint)),
                              overlays=overlays, notes=case_notes() if case_notes is not None else None,
                              title=f"{model.arch} on {config.dataset} / {config.test_list}")
            logger.info("\n%s", metric_tables(per_case, summary, labels, distance_unit))
            note = unpredicted_note(per_case, labels, config.metrics)  # HD95 0 that means 'not predicted'
            if note:
                logger.info(note)
            logger.info("mean DSC %.4f  mean HD95 %.4f %s  (%s protocol) -> %s", record["mean_dice"],
                        record["mean_hd95"], DISTANCE_UNIT_WORDS[distance_unit], config.metrics,
                        output_dir / "summary.json")
    return record


def report_facts(config: EvalConfig, arch: str, kind: str, img_size: int, device: torch.device,
                 num_cases: int, checkpoint_state: str = "") -> dict:
    """The run as the results page's header lists it."""
    return {"model": arch, "data set": config.dataset, "test list": f"{config.test_list} ({num_cases} {kind}s)",
            "checkpoint": str(config.checkpoint), "checkpoint state": checkpoint_state,
            "metrics protocol": config.metrics, "HD95 / ASD unit": evaluation_distance_unit(config), "tta": config.tta,
            "network input": f"{img_size} px", "device": str(device),
            "date": datetime.now().astimezone().isoformat(timespec="seconds")}


def _case_writer(config: EvalConfig, kind: str, output_dir: Path, created: CreatedPaths,
                 context_pairs: Callable[[dict], list] | None = None,
                 overlays: dict[str, list[Path]] | None = None) -> CaseCallback:
    """Callback of ``evaluate_model`` writing the per-case NIfTI files and overlays that were asked for (an image
    case has one overlay, whatever N ``--save-overlays`` asks for; ``context_pairs(context)`` gives the reference
    pairs, e.g. supports, shown with it); ``overlays`` collects each case's overlay paths."""
    nifti_dir = created.mkdir(config.test_save_dir) if config.is_savenii else None
    overlay_dir = created.mkdir(output_dir / "overlays") if config.save_overlays else None

    def write(case: str, image: np.ndarray, prediction: np.ndarray, label: np.ndarray, context: dict) -> None:
        if nifti_dir is not None:
            save_case_nifti(nifti_dir, case, image, prediction, label, created,
                            get_dataset(config.dataset).original_grid, config.num_classes)
        if overlay_dir is None:
            return
        if kind == "image":
            references = context_pairs(context) if context_pairs is not None and context else ()
            paths = [save_image_overlay(overlay_dir, case, image, prediction, label, config.num_classes, created,
                                        references)]
        else:
            paths = save_case_overlays(overlay_dir, case, image, prediction, label, config.num_classes,
                                       config.save_overlays, created)
        if overlays is not None:
            overlays[case] = paths

    return write

"""Per-case segmentation metrics (Dice, HD95, Jaccard, ASD) with medpy semantics.

Two protocols decide what an organ that is absent from the prediction and/or the ground truth scores:

* ``'transunet'`` — the convention behind the paper's tables (TransUNet / the authors' release):
  both present -> medpy values; predicted but absent in ground truth -> (1, 0, 1, 0);
  not predicted -> (0, 0, 0, 0).
* ``'strict'`` — absent in both -> all NaN (left out of the means); any other one-sided case ->
  Dice 0, Jaccard 0, HD95 and ASD NaN (distance undefined, reported as missing).

The "asd" column is medpy's ``assd`` (average *symmetric* surface distance), as in the release.
Surface metrics are computed on a crop of the volume and are bit-identical to medpy on the full volume.

Distances are in voxel steps without a spacing (the benchmark papers' protocol: "pixel") or in millimetres with one
(medpy's ``voxelspacing``: "mm"); :func:`metric_columns` names the columns with their unit where it is mm.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

from datasets.registry import DISTANCE_UNITS

__all__ = ["METRIC_NAMES", "PROTOCOLS", "DISTANCE_UNITS", "case_metrics", "default_workers", "metric_columns",
           "summarize", "unpredicted_note"]

METRIC_NAMES = ("dice", "hd95", "jaccard", "asd")
DISTANCE_METRICS = ("hd95", "asd")
PROTOCOLS = ("transunet", "strict")

# Rows (dice, hd95, jaccard, asd) for organs missing from the prediction and/or the ground truth.
_TRANSUNET_PREDICTED_NOT_PRESENT = (1.0, 0.0, 1.0, 0.0)
_TRANSUNET_NOT_PREDICTED = (0.0, 0.0, 0.0, 0.0)
_STRICT_ABSENT_IN_BOTH = (np.nan, np.nan, np.nan, np.nan)
_STRICT_ONE_SIDED = (0.0, np.nan, 0.0, np.nan)

_HD_PERCENTILE = 95
_SURFACE_CONNECTIVITY = 1  # medpy's default footprint (face neighbours)
_CROP_MARGIN = 1  # one background voxel around the masks, see _union_box
# Classes are scored in parallel threads (scipy's erosion and distance transform release the GIL); each thread holds
# a few full-size arrays at most, so the default is capped to bound memory on many-core machines.
_MAX_DEFAULT_WORKERS = 8


def metric_columns(distance_unit: str) -> tuple[str, ...]:
    """The names of METRIC_NAMES' columns in metrics.csv and the printed tables: in millimetres the distances carry
    their unit (``hd95_mm``, ``asd_mm``); in pixels they keep the names of the papers' tables (``hd95``, ``asd``),
    so that files of the benchmark protocol read as before (summary.json names the unit either way)."""
    if distance_unit not in DISTANCE_UNITS:
        raise ValueError(f"distance unit must be one of {', '.join(DISTANCE_UNITS)}, got {distance_unit!r}")
    if distance_unit == "pixel":
        return METRIC_NAMES
    return tuple(f"{name}_mm" if name in DISTANCE_METRICS else name for name in METRIC_NAMES)


def _check_labels(labels: np.ndarray, name: str, num_classes: int) -> np.ndarray:
    """Return ``labels`` as an integer array, or raise ValueError naming the problem."""
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(f"{name}: expected a 2-D [H, W] or 3-D [D, H, W] label array, got shape {labels.shape}")
    if labels.size == 0:
        raise ValueError(f"{name}: label array is empty (shape {labels.shape})")
    if labels.dtype == np.bool_:
        return labels.view(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or not np.array_equal(labels, np.round(labels)):
            raise ValueError(f"{name}: labels must be integers, got non-integer values of dtype {labels.dtype}")
        labels = labels.astype(np.int64)
    low, high = labels.min(), labels.max()
    if low < 0 or high >= num_classes:
        raise ValueError(f"{name}: labels must lie in [0, {num_classes - 1}] for num_classes={num_classes}, "
                         f"found values in [{low}, {high}]")
    return labels


def _check_spacing(spacing: float | Sequence[float] | None, ndim: int) -> np.ndarray | None:
    """Voxel spacing as a float64 vector of length ``ndim`` (None keeps medpy's unit grid)."""
    if spacing is None:
        return None
    values = np.asarray(spacing, dtype=np.float64)
    if values.ndim == 0:
        values = np.full(ndim, values)
    if values.shape != (ndim,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"spacing must be a positive number or {ndim} positive numbers, got {spacing!r}")
    return np.ascontiguousarray(values)


def _union_box(box_a: tuple[slice, ...], box_b: tuple[slice, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Bounding box of two boxes, grown by ``_CROP_MARGIN`` voxels and clamped to the volume.

    Why the crop gives exactly medpy's full-volume values:
    * every voxel outside the box is background in both masks, and the margin keeps an explicit background
      layer inside the crop wherever the volume goes on; so erosion sees the same neighbourhood for every mask
      voxel (at a clamped face, the crop face is the volume face, where scipy pads with background as before)
      and extracts the same surface voxels (strictly, scipy's border_value=0 would already give this without
      the margin; the margin keeps the argument independent of that padding rule);
    * the distance transform gives each voxel the distance to the nearest surface voxel of the other mask,
      from the integer offset to it; all surface voxels lie in the crop, so the minimum is the same;
    * cropping keeps the C order of voxels, so the distance lists and their mean/percentile are the same.
    """
    return tuple(slice(max(min(a.start, b.start) - _CROP_MARGIN, 0), min(max(a.stop, b.stop) + _CROP_MARGIN, size))
                 for a, b, size in zip(box_a, box_b, shape))


def _surface(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """One-voxel-thick border of ``mask`` (medpy: mask XOR its erosion)."""
    return mask ^ ndimage.binary_erosion(mask, structure=footprint, iterations=1)


def _overlap_and_surface_metrics(pred_mask: np.ndarray, gt_mask: np.ndarray, spacing: np.ndarray | None,
                                 surface: bool) -> tuple[float, float, float, float]:
    """(dice, hd95, jaccard, assd) of two non-empty boolean masks, computed as medpy's dc/hd95/jc/assd do.

    medpy's hd95 and assd each compute both directed surface-distance lists; here each list is computed once
    and shared (same operations, same order, so the same floats). ``surface=False`` skips them (NaN).
    """
    intersection = np.count_nonzero(pred_mask & gt_mask)
    pred_size, gt_size = np.count_nonzero(pred_mask), np.count_nonzero(gt_mask)
    dice = 2.0 * intersection / float(pred_size + gt_size)
    jaccard = float(intersection) / float(pred_size + gt_size - intersection)
    if not surface:
        return dice, np.nan, jaccard, np.nan

    footprint = ndimage.generate_binary_structure(pred_mask.ndim, _SURFACE_CONNECTIVITY)
    pred_surface, gt_surface = _surface(pred_mask, footprint), _surface(gt_mask, footprint)
    pred_to_gt = ndimage.distance_transform_edt(~gt_surface, sampling=spacing)[pred_surface]
    gt_to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)[gt_surface]
    distances = np.concatenate([pred_to_gt, gt_to_pred])
    hd95 = float(np.percentile(distances, _HD_PERCENTILE))
    assd = float(distances.mean())
    return dice, hd95, jaccard, assd


def _missing_organ_row(predicted: bool, present: bool, protocol: str) -> tuple[float, float, float, float]:
    """Metric row for an organ absent from the prediction and/or the ground truth."""
    if protocol == "transunet":
        return _TRANSUNET_PREDICTED_NOT_PRESENT if predicted else _TRANSUNET_NOT_PREDICTED
    return _STRICT_ONE_SIDED if (predicted or present) else _STRICT_ABSENT_IN_BOTH


def default_workers() -> int:
    """Threads for scoring classes: the CPUs this process may use, at most ``_MAX_DEFAULT_WORKERS``."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(usable, _MAX_DEFAULT_WORKERS))


def case_metrics(pred: np.ndarray, gt: np.ndarray, num_classes: int, protocol: str = "transunet",
                 spacing: float | Sequence[float] | None = None, surface: bool = True,
                 workers: int | None = None) -> np.ndarray:
    """Dice, HD95, Jaccard and ASD of every foreground class of one case.

    Args:
        pred, gt: integer label maps of the same shape, [D, H, W] or [H, W], values in [0, num_classes).
        num_classes: number of classes including background (class 0, not scored).
        protocol: 'transunet' (paper tables) or 'strict' (NaN for undefined values), see the module docstring.
        spacing: voxel size per axis (or one number for all), as medpy's ``voxelspacing``; None = unit grid.
        surface: False skips the (costly) surface distances: the hd95 and asd columns are then all NaN
            (e.g. Dice-only validation during training, as the release's validation does).
        workers: threads that score classes in parallel (None: ``default_workers()``; 1: in this thread). The
            values do not depend on it: each class is computed by the same operations either way.

    Returns:
        float64 array [num_classes - 1, 4], columns METRIC_NAMES = (dice, hd95, jaccard, asd), where
        dice/hd95/jaccard are medpy's ``dc``/``hd95``/``jc`` and asd is medpy's ``assd`` (symmetric).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    num_classes = int(num_classes)
    pred = _check_labels(pred, "pred", num_classes)
    gt = _check_labels(gt, "gt", num_classes)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {pred.shape} vs {gt.shape}")
    spacing = _check_spacing(spacing, pred.ndim)
    if workers is not None and (int(workers) != workers or workers < 1):
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")

    # One pass per map finds every class's bounding box (None for an absent class).
    pred_boxes = ndimage.find_objects(pred, max_label=num_classes - 1)
    gt_boxes = ndimage.find_objects(gt, max_label=num_classes - 1)
    rows = np.empty((num_classes - 1, len(METRIC_NAMES)), dtype=np.float64)
    present = []
    for index, (pred_box, gt_box) in enumerate(zip(pred_boxes, gt_boxes)):
        if pred_box is None or gt_box is None:
            rows[index] = _missing_organ_row(pred_box is not None, gt_box is not None, protocol)
        else:
            present.append((index, _union_box(pred_box, gt_box, pred.shape)))

    def score(index: int, box: tuple[slice, ...]) -> tuple[float, float, float, float]:
        label = index + 1
        return _overlap_and_surface_metrics(pred[box] == label, gt[box] == label, spacing, surface)

    workers = min(default_workers() if workers is None else int(workers), len(present))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            scored = list(pool.map(score, *zip(*present)))
    else:
        scored = [score(*task) for task in present]
    for (index, _), row in zip(present, scored):
        rows[index] = row
    if not surface:
        rows[:, [METRIC_NAMES.index("hd95"), METRIC_NAMES.index("asd")]] = np.nan
    return rows


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean over ``axis`` ignoring NaN; NaN where every value is NaN (without numpy's RuntimeWarning)."""
    valid = ~np.isnan(values)
    counts = valid.sum(axis=axis)
    totals = np.where(valid, values, 0.0).sum(axis=axis)
    return np.divide(totals, counts, out=np.full(totals.shape, np.nan), where=counts > 0)


def summarize(per_case: Mapping[str, np.ndarray]) -> dict:
    """Dataset-level means of ``case_metrics`` rows, averaged as TransUNet does.

    Per class: mean over cases; overall: mean of the per-class means. NaN entries (strict protocol) are left
    out of every mean; a mean with nothing left is NaN.

    Returns:
        dict(mean_dice, mean_hd95, mean_jaccard, mean_asd, num_cases,
             per_class=[dict(dice, hd95, jaccard, asd) for each foreground class]).
    """
    if not per_case:
        raise ValueError("summarize: no cases given")
    arrays = {name: np.asarray(rows, dtype=np.float64) for name, rows in per_case.items()}
    shapes = {rows.shape for rows in arrays.values()}
    if len(shapes) != 1:
        raise ValueError(f"summarize: cases have different metric-table shapes {sorted(shapes)}")
    (shape,) = shapes
    if len(shape) != 2 or shape[1] != len(METRIC_NAMES):
        raise ValueError(f"summarize: expected [num_classes - 1, {len(METRIC_NAMES)}] tables, got shape {shape}")

    per_class = _nanmean(np.stack(list(arrays.values())), axis=0)
    overall = _nanmean(per_class, axis=0)
    summary = {f"mean_{name}": float(value) for name, value in zip(METRIC_NAMES, overall)}
    summary["num_cases"] = len(arrays)
    summary["per_class"] = [{name: float(value) for name, value in zip(METRIC_NAMES, row)} for row in per_class]
    return summary


def unpredicted_note(per_case: Mapping[str, np.ndarray], labels: Sequence[str], protocol: str) -> str | None:
    """Under the transunet protocol a class that a case's prediction does not contain scores (0, 0, 0, 0): its HD95
    of 0 reads as perfect, and a model that predicts nothing has a mean HD95 of 0. A line saying how often that
    happened, per class, to print beside the tables; None when it did not (or under the strict protocol, which
    reports those distances as missing)."""
    if protocol != "transunet" or not per_case:
        return None
    rows = np.stack([np.asarray(table, dtype=np.float64) for table in per_case.values()])  # [cases, classes, 4]
    empty = (rows[..., METRIC_NAMES.index("dice")] == 0) & (rows[..., METRIC_NAMES.index("hd95")] == 0)
    counts = empty.sum(axis=0)
    if not counts.any():
        return None
    named = ", ".join(f"{label} in {count} of {len(rows)}" for label, count in zip(labels, counts) if count)
    return (f"note: the model predicted nothing for {int(counts.sum())} (case, class) pairs ({named} cases); the "
            f"transunet protocol scores them DSC 0 and HD95 0, as the published tables do, so a low HD95 here is not "
            f"a close boundary (--metrics strict reports those distances as n/a)")

"""predict.py's output files besides the label maps (whose formats are :mod:`datasets.io`'s): probabilities,
volumes.csv (voxels and mL per input and structure), supports.csv, and the label maps of earlier runs read back for
the inputs they are skipped for."""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datasets.errors import DataError
from datasets.io.images import read_label_png
from datasets.io.nifti import mm_per_unit, nifti_image

from .geometry import voxel_volume_mm3

__all__ = ["LABEL_SUFFIX", "PROBABILITIES_SUFFIX", "OVERLAY_DIR", "VOLUMES_CSV", "CONTEXT_CSV", "probabilities_bytes",
           "volume_rows", "volumes_csv_text", "existing_labels", "context_csv_text"]

LABEL_SUFFIX = {"volume": ".nii.gz", "image": ".png"}
PROBABILITIES_SUFFIX = "_probabilities.npz"
OVERLAY_DIR = "overlays"
VOLUMES_CSV = "volumes.csv"
CONTEXT_CSV = "supports.csv"  # support-set models: the pool images each input was segmented with
MM3_PER_ML = 1000.0


def probabilities_bytes(probabilities: np.ndarray, class_names: Sequence[str]) -> bytes:
    """Compressed ``.npz``: ``probabilities`` float16 [K, ...] and ``class_names`` (background first)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, probabilities=probabilities.astype(np.float16),
                        class_names=np.array(["background", *class_names]))
    return buffer.getvalue()


def volume_rows(name: str, labels: np.ndarray, class_names: Sequence[str], voxel_mm3: float | None,
                kind: str) -> list[list[str]]:
    """volumes.csv rows of one input: per foreground class its voxel (pixel) count and, for a volume with a known
    voxel size, its volume in mL."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=len(class_names) + 1)
    rows = []
    for index, class_name in enumerate(class_names, start=1):
        count = int(counts[index]) if index < len(counts) else 0
        if kind == "volume":
            volume = "" if voxel_mm3 is None else f"{count * voxel_mm3 / MM3_PER_ML:.6g}"
            rows.append([name, class_name, str(count), volume])
        else:
            rows.append([name, class_name, str(count)])
    return rows


def csv_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def merged_rows(path: Path | None, header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[list[str]]:
    """``rows`` merged into the rows of the CSV file ``path`` (when it exists) by their first column (the input):
    this run's rows replace an input's earlier ones, the rows of inputs this run did not see are kept (their outputs
    are still in the folder). DataError when the file has other columns."""
    grouped: dict[str, list[list[str]]] = {}
    if path is not None and path.exists():
        with open(path, newline="", encoding="utf-8") as handle:
            found = list(csv.reader(handle))
        if found and found[0] != list(header):
            raise DataError(path, f"its columns {found[0]} are not {list(header)} (written by another kind of model?): "
                                  f"choose another --output")
        for row in found[1:]:
            grouped.setdefault(row[0], []).append(row)
    new: dict[str, list[list[str]]] = {}
    for row in rows:
        new.setdefault(row[0], []).append(list(row))
    grouped.update(new)
    return [row for group in grouped.values() for row in group]


def volumes_csv_text(rows: Sequence[Sequence[str]], kind: str, merge_with: Path | None = None) -> str:
    """volumes.csv of ``rows``, merged into the file ``merge_with`` (:func:`merged_rows`) when given."""
    header = ["case", "class", "voxels", "volume_ml"] if kind == "volume" else ["case", "class", "pixels"]
    return csv_text(header, merged_rows(merge_with, header, rows))


def existing_labels(path: Path, kind: str) -> tuple[np.ndarray, float | None]:
    """A label map written earlier (a skipped input) and its voxel volume in mm^3 (None for PNGs)."""
    try:
        if kind == "image":
            return read_label_png(path), None
        image, labels = nifti_image(path)
        return labels, voxel_volume_mm3(image.affine, mm_per_unit(image.header))
    except DataError as exc:
        raise DataError(path, f"existing output cannot be read (use --overwrite to redo it): {exc.problem}") from exc


def context_csv_text(path: Path, rows: dict[str, list[str]]) -> str:
    """supports.csv: ``input, rank, pool image`` per input, rows of earlier runs (skipped inputs) kept."""
    header = ["input", "rank", "pool_image"]
    flat = [[name, str(rank), pool_image] for name, names in rows.items()
            for rank, pool_image in enumerate(names, start=1)]
    return csv_text(header, merged_rows(path, header, flat))

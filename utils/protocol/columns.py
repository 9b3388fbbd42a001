"""A protocol's columns: which checkpoint each column takes (its training data set), each column evaluated by the
test entry as ``test.py`` would, and the protocol's average over them (see the package docstring)."""
from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import get_dataset
from datasets.errors import DataError
from datasets.protocols import Column, Protocol, get_protocol
from utils.checkpoint import CheckpointError, atomic_write_json, atomic_write_text, load_checkpoint
from utils.config import EvalConfig, saved_options
from utils.protocol.results import (
    RESULT_METRICS, RESULTS_FORMAT, RESULTS_HTML, RESULTS_JSON, RESULTS_MD, results_html, results_markdown,
)

# Test-parser options the protocol sets itself (not accepted after ``--``).
RESERVED_TEST_OPTIONS = ("--dataset", "--checkpoint", "--test_list", "--volume_path", "--list_dir", "--output_dir",
                         "--device", "--model")


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints -> columns
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointInfo:
    """What a protocol needs to know of a checkpoint: its path, training data set and model."""

    path: str
    dataset: str
    arch: str


def read_checkpoint_info(path: str | os.PathLike) -> CheckpointInfo:
    """The training data set (run option ``dataset``) and arch of a checkpoint; CheckpointError naming the file when
    it cannot be read or records no data set."""
    ckpt = load_checkpoint(path, map_location="cpu")
    dataset = saved_options(ckpt).run.dataset
    if not isinstance(dataset, str) or not dataset:
        raise CheckpointError(path, "records no training data set (run option dataset): protocols need a checkpoint "
                                    "written by train.py")
    return CheckpointInfo(path=str(path), dataset=dataset.lower(), arch=ckpt["arch"])


def _describe(infos: Sequence[CheckpointInfo]) -> str:
    return ", ".join(f"{info.path} (trained on {info.dataset})" for info in infos) or "none"


def match_checkpoints(protocol: Protocol, infos: Sequence[CheckpointInfo]) -> dict[str, CheckpointInfo]:
    """{column name: the checkpoint trained on the column's source}. ValueError naming the column when no
    checkpoint or several fit it; CheckpointError naming a checkpoint that fits no column."""
    matched: dict[str, CheckpointInfo] = {}
    for column in protocol.columns:
        fitting = [info for info in infos if info.dataset == column.train_dataset]
        if not fitting:
            if len(infos) == 1:
                raise CheckpointError(infos[0].path, f"trained on {infos[0].dataset}, but column {column.header} of "
                                                     f"protocol {protocol.name} needs a checkpoint trained on "
                                                     f"{column.train_dataset}")
            raise ValueError(f"column {column.header} of protocol {protocol.name} needs a checkpoint trained on "
                             f"{column.train_dataset}; given: {_describe(infos)}")
        if len(fitting) > 1:
            raise ValueError(f"column {column.header} of protocol {protocol.name}: {len(fitting)} checkpoints trained "
                             f"on {column.train_dataset} ({', '.join(info.path for info in fitting)}); give one")
        matched[column.name] = fitting[0]
    used = {id(info) for info in matched.values()}
    for info in infos:
        if id(info) not in used:
            raise CheckpointError(info.path, f"trained on {info.dataset}, which no column of protocol {protocol.name} "
                                             f"trains on (it trains on {', '.join(protocol.train_datasets)})")
    return matched


# ----------------------------------------------------------------------------------------------------------------
# Averages
# ----------------------------------------------------------------------------------------------------------------
def weighted_average(values: Sequence[float], weights: Sequence[float]) -> float:
    """sum(w_i * v_i) / sum(w_i); NaN when a weighted value is NaN; ValueError for no or non-positive weights."""
    if len(values) != len(weights) or not weights:
        raise ValueError(f"need one weight per value, got {len(values)} values and {len(weights)} weights")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {list(weights)}")
    return math.fsum(w * v for v, w in zip(values, weights)) / math.fsum(weights)


def column_average(protocol: Protocol, columns: Mapping[str, Mapping[str, Any]]) -> dict | None:
    """The protocol's average over the columns' results (None for average 'none'): image_weighted weighs column i
    by its number of evaluated images n_i."""
    if protocol.average == "none":
        return None
    counts = [columns[column.name]["num_cases"] for column in protocol.columns]
    average = {"kind": protocol.average, "num_cases": int(sum(counts))}
    for key in RESULT_METRICS:
        values = [columns[column.name][key] for column in protocol.columns]
        average[key] = weighted_average([math.nan if v is None else v for v in values], counts)
    return average


# ----------------------------------------------------------------------------------------------------------------
# Running the columns
# ----------------------------------------------------------------------------------------------------------------
def data_paths(dataset: str, data_root: str | None) -> tuple[str, str]:
    """(volume_path, list_dir) of a data set: its spec's defaults, or under ``data_root`` as the phantom writer lays
    the sets out (``DATA_ROOT/<dir name>``, ``DATA_ROOT/lists/<list dir name>``)."""
    spec = get_dataset(dataset)
    if data_root is None:
        return spec.volume_path, spec.list_dir
    if spec.phantom is None:
        raise ValueError(f"--data_root: data set {dataset} has no standard folder names (no phantom writer)")
    return os.path.join(data_root, spec.phantom.dir_name), os.path.join(data_root, "lists", spec.phantom.list_dir_name)


def check_column_data(column: Column, volume_path: str, list_dir: str) -> None:
    """DataError for a missing list, data folder or listed file of a column (before anything is evaluated)."""
    list_path = os.path.join(list_dir, f"{column.test_list}.txt")
    if not os.path.isfile(list_path):
        spec = get_dataset(column.dataset)
        hint = f"; prepare the data set with python -m {spec.prepare_module}" if spec.prepare_module else ""
        if column.test_list == "all":
            hint += " (preparations from before the 'all' list: run it again)"
        raise DataError(list_path, f"list of column {column.header} does not exist{hint}")
    if not os.path.isdir(volume_path):
        raise DataError(volume_path, f"data folder of column {column.header} does not exist")
    spec = get_dataset(column.dataset)
    spec.build(volume_path, list_dir, column.test_list, spec.num_classes)  # DataError for a listed file missing


def check_forwarded(options: Sequence[str]) -> None:
    """ValueError for options after ``--`` that the protocol sets itself."""
    for token in options:
        name = token.split("=", 1)[0]
        if name.startswith("--") and len(name) > 2 and any(option.startswith(name) for option in RESERVED_TEST_OPTIONS):
            raise ValueError(f"{token} after --: the protocol sets {', '.join(RESERVED_TEST_OPTIONS)} itself")


def column_config(column: Column, checkpoint: str, volume_path: str, list_dir: str, output_dir: str, device: str,
                  forwarded: Sequence[str] = ()) -> EvalConfig:
    """The test entry's config of one column, built by the test parser as ``test.py`` builds it."""
    from utils.cli import build_test_parser  # the scripts' parser (imports the model registry)

    return build_test_parser().parse_config(
        ["--dataset", column.dataset, "--checkpoint", checkpoint, "--test_list", column.test_list,
         "--volume_path", volume_path, "--list_dir", list_dir, "--output_dir", output_dir, "--device", device,
         *forwarded])


def column_result(column: Column, info: CheckpointInfo, config: EvalConfig, record: Mapping[str, Any]) -> dict:
    """results.json entry of one evaluated column."""
    return {"title": column.header, "dataset": column.dataset, "test_list": column.test_list,
            "train_dataset": column.train_dataset, "checkpoint": info.path, "arch": info.arch,
            "num_cases": int(record["num_cases"]),
            **{key: record[summary_key] for key, summary_key in RESULT_METRICS.items()},
            "volume_path": config.volume_path, "list_dir": config.list_dir, "output_dir": config.output_dir}


def run_label(infos: Sequence[CheckpointInfo]) -> str:
    """The arch of the checkpoints ('a+b' when they differ)."""
    return "+".join(dict.fromkeys(info.arch for info in infos))


def run_protocol(options: argparse.Namespace) -> dict:
    """Evaluate every column, write results.json / results.md, print the table; returns the results record."""
    from utils.evaluator import evaluate  # imports torch and the model registry
    from utils.runlog import removed_on_failure

    protocol = get_protocol(options.protocol)
    infos = [read_checkpoint_info(path) for path in options.checkpoint]
    matched = match_checkpoints(protocol, infos)
    output_dir = options.output_dir or os.path.join(os.path.dirname(os.path.abspath(options.checkpoint[0])),
                                                    f"protocol_{protocol.name}")
    configs = {}
    for column in protocol.columns:  # everything checked before anything is written
        volume_path, list_dir = data_paths(column.dataset, options.data_root)
        check_column_data(column, volume_path, list_dir)
        configs[column.name] = column_config(column, matched[column.name].path, volume_path, list_dir,
                                             os.path.join(output_dir, column.name), options.device, options.forwarded)
    arch = run_label(list(matched.values()))
    with removed_on_failure() as created:
        created.mkdir(output_dir)
        columns = {}
        for column in protocol.columns:
            config = configs[column.name]
            created.track(config.output_dir)
            columns[column.name] = column_result(column, matched[column.name], config, evaluate(config))
        results = {"format": RESULTS_FORMAT, "protocol": protocol.name, "title": protocol.title,
                   "label": options.label or arch, "arch": arch,
                   "checkpoints": list(dict.fromkeys(info.path for info in matched.values())),
                   "metric_protocol": configs[protocol.columns[0].name].metrics,
                   "columns": columns, "average": column_average(protocol, columns)}
        table = results_markdown(protocol, [results], published=options.published)
        atomic_write_json(created.track(os.path.join(output_dir, RESULTS_JSON)), results)
        atomic_write_text(created.track(os.path.join(output_dir, RESULTS_MD)), table)
        atomic_write_text(created.track(os.path.join(output_dir, RESULTS_HTML)),
                          results_html(protocol, results, output_dir))
    print(table, end="")
    print(f"wrote {os.path.join(output_dir, RESULTS_JSON)}, {RESULTS_MD} and {RESULTS_HTML}")
    return results

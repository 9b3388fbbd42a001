"""Run one of MatchSeg's evaluation protocols (:mod:`datasets.protocols`) and write a paper-style results table.

    python protocol.py --protocol busi_to_bus --checkpoint runs/busi_unet_128/last.pth [--published]
    python protocol.py --protocol single_domain --checkpoint busi.pth bus.pth glas.pth
    python protocol.py --protocol ham10000_nv --checkpoint ham.pth --data_root data/phantom -- --tta flip
    python protocol.py --table a/results.json b/results.json [--published]

Each column of the protocol gets the checkpoint trained on that column's source data set (``args.dataset`` of the
checkpoint, as train.py stores it): none or several -> an error naming the column; a checkpoint that no column uses
-> an error naming it. Every column is evaluated with the test entry (:func:`utils.evaluator.evaluate`, its config
built by the test parser as ``test.py`` does) into ``<output_dir>/<column>/`` (summary.json, metrics.csv, log.txt);
then ``<output_dir>/results.json`` (per column: data set, list, number of images, DSC, IoU, HD95 as fractions /
pixels; the average; checkpoints; arch), ``<output_dir>/results.md`` (the table, DSC/IoU in %, 2 decimals) and
``<output_dir>/results.html`` (a page: ours per column, linking each column's test page, and the paper's table with
our row above it and the gap to each published cell coloured) are written and the table printed. Options after
``--`` go to every column's test parser (e.g. ``--tta flip``).
``--data_root DIR``: the data sets lie as the phantom writer lays them out, ``DIR/<BUSI|BUS|GlaS|HAM10000>`` and
lists ``DIR/lists/lists_<name>``; default: each data set's own paths (``./data/<name>``, ``./lists/lists_<name>``).

Bad input (checkpoint, data, options) -> one ``error: <file>: <problem>`` line, exit status 2, and nothing left of
the outputs this run created.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from datetime import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import get_dataset
from datasets.common import DataError
from datasets.protocols import (
    AVERAGE_COLUMN, METRIC_TITLES, PUBLISHED_SOURCE, Column, Protocol, get_protocol, list_protocols, published_rows,
)
from utils.checkpoint import CheckpointError, atomic_write_json, atomic_write_text, load_checkpoint
from utils.config import EvalConfig
from utils.report import Column as PageColumn
from utils.report import REPORT_HTML, esc, facts_list, html_page, html_table, number_td, relative_href, td

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
RESULTS_HTML = "results.html"
GAP_FULL = 10.0  # percentage points at which a gap's colour is at its darkest
RESULTS_FORMAT = "protocol-results/1"
# results.json metric keys -> the evaluator's summary keys
RESULT_METRICS = {"dice": "mean_dice", "iou": "mean_jaccard", "hd95": "mean_hd95"}
TABLE_METRIC_KEYS = {"dice": "dice", "jaccard": "iou"}  # protocol metric -> results.json key
# Test-parser options the protocol sets itself (not accepted after ``--``).
RESERVED_TEST_OPTIONS = ("--dataset", "--checkpoint", "--test_list", "--volume_path", "--list_dir", "--output_dir",
                         "--device", "--model")
PUBLISHED_SUFFIX = " (paper)"


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
    """The training data set (``args.dataset``) and arch of a checkpoint; CheckpointError naming the file when it
    cannot be read or records no data set."""
    ckpt = load_checkpoint(path, map_location="cpu")
    args = ckpt.get("args")
    dataset = args.get("dataset") if isinstance(args, Mapping) else None
    if not isinstance(dataset, str) or not dataset:
        raise CheckpointError(path, "records no training data set (args.dataset): protocols need a checkpoint "
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


# ----------------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------------
def _cell_title(protocol: Protocol, title: str, metric: str) -> str:
    return title if len(protocol.metrics) == 1 else f"{title} {METRIC_TITLES[metric]}"


def table_header(protocol: Protocol) -> list[str]:
    """Model, then every (column, metric) and the average's, as the paper's table."""
    titles = [column.header for column in protocol.columns]
    if protocol.average != "none":
        titles.append(AVERAGE_COLUMN)
    return ["Model", *(_cell_title(protocol, title, metric) for title in titles for metric in protocol.metrics)]


def _percent_cells(protocol: Protocol, cells: Mapping[str, Mapping[str, float | None]]) -> list[str]:
    """Formatted cells of one row from {column name or AVERAGE_COLUMN: {metric: value in %}} ('-' where absent)."""
    names = [column.name for column in protocol.columns]
    if protocol.average != "none":
        names.append(AVERAGE_COLUMN)
    out = []
    for name in names:
        for metric in protocol.metrics:
            value = cells.get(name, {}).get(metric)
            out.append("-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}")
    return out


def result_cells(results: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """A results record's row in % ({column name or AVERAGE_COLUMN: {metric: value}})."""
    def percent(entry: Mapping[str, Any]) -> dict[str, float | None]:
        return {metric: None if entry.get(key) is None else 100.0 * entry[key]
                for metric, key in TABLE_METRIC_KEYS.items()}

    cells = {name: percent(entry) for name, entry in results["columns"].items()}
    if results.get("average"):
        cells[AVERAGE_COLUMN] = percent(results["average"])
    return cells


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def results_markdown(protocol: Protocol, runs: Sequence[Mapping[str, Any]], published: bool = False) -> str:
    """Markdown: the protocol's title, the table (one row per run, then the paper's rows if ``published``), and
    what each run's columns tested."""
    header = table_header(protocol)
    lines = [f"## {protocol.title}", "", _markdown_row(header), "|" + "---|" * len(header)]
    for run in runs:
        lines.append(_markdown_row([str(run["label"]), *_percent_cells(protocol, result_cells(run))]))
    if published:
        for model, cells in published_rows(protocol).items():
            lines.append(_markdown_row([model + PUBLISHED_SUFFIX, *_percent_cells(protocol, cells)]))
    metrics = "/".join(METRIC_TITLES[metric] for metric in protocol.metrics)
    lines += ["", f"{metrics} in % (per image, averaged over the images of each column)."
              + (f" {protocol.note}." if protocol.note else "")]
    for run in runs:
        tested = "; ".join(f"{entry['title']}: {entry['dataset']}/{entry['test_list']}, {entry['num_cases']} images"
                           for entry in run["columns"].values())
        lines.append(f"- {run['label']}: {tested}; checkpoint(s) {', '.join(run['checkpoints'])}")
    if published:
        lines.append(f"- rows marked{PUBLISHED_SUFFIX}: {PUBLISHED_SOURCE}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# The results page
# ----------------------------------------------------------------------------------------------------------------
def _model_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def gap_style(gap: float) -> str:
    """Background of a gap (ours - paper, points): green where ours is higher, red where lower, darker with size."""
    alpha = 0.12 + 0.6 * min(abs(gap) / GAP_FULL, 1.0)
    return f"background: rgba({'26, 127, 55' if gap >= 0 else '207, 34, 46'}, {alpha:.2f})"


def _gap_badge(ours: float | None, paper: float | None) -> str:
    if ours is None or paper is None or math.isnan(ours) or math.isnan(paper):
        return ""
    gap = ours - paper
    return (f'<span class="gap" data-gap="{gap!r}" style="{gap_style(gap)}" '
            f'title="ours - paper = {gap:+.2f} points">{gap:+.2f}</span>')


def _cell_names(protocol: Protocol) -> list[str]:
    return [column.name for column in protocol.columns] + ([AVERAGE_COLUMN] if protocol.average != "none" else [])


def results_html(protocol: Protocol, results: Mapping[str, Any], page_dir: str | os.PathLike) -> str:
    """The protocol's page (in ``page_dir``): what each column tested with our numbers and a link to its test page,
    then the paper's table with our row above the published ones and, in each published cell, the gap ours - paper
    coloured (the row of the same model as ours in bold)."""
    ours = result_cells(results)
    metrics = "/".join(METRIC_TITLES[metric] for metric in protocol.metrics)
    column_rows = []
    for entry in results["columns"].values():
        page = os.path.join(entry["output_dir"], REPORT_HTML)
        link = (f'<a href="{esc(relative_href(page, page_dir))}">test page</a>' if os.path.isfile(page)
                else '<span class="na">none</span>')
        column_rows.append([td(entry["title"], cls="text"),
                            td(f"{entry['dataset']} / {entry['test_list']}", cls="text"),
                            td(entry["train_dataset"], cls="text"),
                            td(str(entry["num_cases"]), value=str(entry["num_cases"])),
                            *(number_td(None if entry.get(key) is None else 100.0 * entry[key], 2)
                              for key in ("dice", "iou")),
                            number_td(entry.get("hd95"), 2), td(link, cls="text", raw=True)])
    columns_table = html_table(
        [PageColumn("column", "column", numeric=False), PageColumn(None, "tested on", numeric=False),
         PageColumn(None, "trained on", numeric=False), PageColumn("images", "images"),
         PageColumn("dsc", "DSC %"), PageColumn("iou", "IoU %"), PageColumn("hd95", "HD95"),
         PageColumn(None, "details", numeric=False)],
        column_rows, table_id="columns")

    names = _cell_names(protocol)
    header = table_header(protocol)
    paper_columns = [PageColumn("model", header[0], numeric=False),
                     *(PageColumn(f"{name}.{metric}", title)
                       for (name, metric), title in zip(((n, m) for n in names for m in protocol.metrics), header[1:]))]
    own = str(results["label"])
    rows = [[td(own, cls="text"), *(number_td(ours.get(name, {}).get(metric), 2) for name in names
                                      for metric in protocol.metrics)]]
    classes = ["ours"]
    same = {_model_key(str(results.get("arch", ""))), _model_key(own)}
    for model, cells in published_rows(protocol).items():
        rows.append([td(model + PUBLISHED_SUFFIX, cls="text"),
                     *(number_td(cells.get(name, {}).get(metric), 2,
                                 extra=_gap_badge(ours.get(name, {}).get(metric), cells.get(name, {}).get(metric)))
                       for name in names for metric in protocol.metrics)])
        classes.append("same" if _model_key(model) in same else None)
    paper_table = html_table(paper_columns, rows, table_id="paper", row_classes=classes)
    facts = {"run": own, "model": results.get("arch"), "checkpoints": ", ".join(results["checkpoints"]),
             "metrics protocol": results.get("metric_protocol"),
             "date": datetime.now().astimezone().isoformat(timespec="seconds")}
    notes = (f"{metrics} in % (per image, averaged over the images of each column)."
             + (f" {protocol.note}." if protocol.note else ""))
    sections = [facts_list(facts), "<h2>Ours, per column</h2>", columns_table,
                "<h2>The paper's table beside ours</h2>",
                f'<p class="note">{esc(notes)} Our row first, then the published ones ({esc(PUBLISHED_SOURCE)}); '
                f"beside each published number the gap ours - paper in points: green where ours is higher, red "
                f"where lower, darker up to {GAP_FULL:g} points. Click a header to sort.</p>", paper_table]
    return html_page(protocol.title, sections)


def read_results(path: str) -> dict:
    """A results.json written by :func:`run_protocol`; DataError naming the file otherwise."""
    try:
        with open(path, encoding="utf-8") as handle:
            results = json.load(handle)
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        raise DataError(path, f"not a {RESULTS_JSON} of protocol.py (format {RESULTS_FORMAT!r})")
    try:
        protocol = get_protocol(results["protocol"])
    except (KeyError, ValueError) as exc:
        raise DataError(path, f"unknown protocol: {exc}") from exc
    missing = [column.name for column in protocol.columns if column.name not in results.get("columns", {})]
    if missing:
        raise DataError(path, f"no results for column(s) {', '.join(missing)} of protocol {protocol.name}")
    return results


def combine_tables(paths: Sequence[str], published: bool = False) -> str:
    """One table of several runs of the same protocol (rows in the order of ``paths``); DataError naming a file of
    another protocol."""
    runs = [read_results(path) for path in paths]
    name = runs[0]["protocol"]
    for path, run in zip(paths, runs):
        if run["protocol"] != name:
            raise DataError(path, f"results of protocol {run['protocol']}, but {paths[0]} has {name}: one table "
                                  "combines runs of one protocol")
    return results_markdown(get_protocol(name), runs, published=published)


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protocol.py", description="Run one of MatchSeg's evaluation protocols and write a paper-style table "
                                        "(or combine the results of several runs with --table).",
        epilog="Options after -- go to every column's test parser (see python test.py --dataset NAME --help), e.g. "
               "-- --tta flip.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--protocol", choices=list_protocols(), help="protocol to run (datasets/protocols.py)")
    mode.add_argument("--table", nargs="+", metavar="RESULTS_JSON",
                      help="print one table of several runs' results.json (same protocol), one row each")
    parser.add_argument("--checkpoint", nargs="+", help="checkpoint(s) of the run; each column takes the one trained "
                                                        "on its source data set")
    parser.add_argument("--output_dir", default=None,
                        help="default: <directory of the first checkpoint>/protocol_<name>")
    parser.add_argument("--data_root", default=None,
                        help="data sets in DATA_ROOT/<BUSI|BUS|GlaS|HAM10000>, lists in DATA_ROOT/lists/lists_<name> "
                             "(the phantom layout); default: each data set's own paths")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--label", default=None, help="row label of this run (default: the checkpoint's arch)")
    parser.add_argument("--published", action="store_true", help="add the paper's rows to the table")
    return parser


RUN_ONLY_OPTIONS = ("checkpoint", "output_dir", "data_root", "label")


def main(argv: Sequence[str] | None = None) -> int:
    """``protocol.py``: exit 0 on success, 2 for bad input (one ``error:`` line)."""
    from utils.cli import run_cli  # the scripts' error handler

    argv = list(sys.argv[1:] if argv is None else argv)
    forwarded: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, forwarded = argv[:split], argv[split + 1:]
    parser = build_parser()
    options = parser.parse_args(argv)
    options.forwarded = forwarded
    if options.table:
        given = [f"--{name}" for name in RUN_ONLY_OPTIONS if getattr(options, name) is not None]
        if given or forwarded:
            parser.error(f"--table combines existing results; {', '.join(given) or '--'} only apply to --protocol")
        return run_cli(lambda o: print(combine_tables(o.table, o.published), end=""), options)
    if not options.checkpoint:
        parser.error("--protocol needs --checkpoint")
    try:
        check_forwarded(forwarded)
    except ValueError as exc:
        parser.error(str(exc))
    return run_cli(run_protocol, options)

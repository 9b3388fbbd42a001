"""A protocol's results: results.json (its format), the paper-style markdown table, the results page (ours beside the
paper's rows, each gap coloured) and the combined table of several runs."""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from datasets.errors import DataError
from datasets.protocols import AVERAGE_COLUMN, METRIC_TITLES, PUBLISHED_SOURCE, Protocol, get_protocol, published_rows
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
PUBLISHED_SUFFIX = " (paper)"


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

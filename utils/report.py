"""Results pages: one HTML file per result that a researcher opens from disk (``file://``) in any browser.

Plain HTML and CSS, one short inline script (click a column header to sort; ``#sort=KEY:asc|desc`` in the address
sorts on load), figures embedded as base64 PNG and images linked by relative paths inside the output folder: the
page needs no server and fetches nothing from a network, so it still works copied to a laptop with its folder.

This module knows tables, metrics and figures, not models: what a model's data side adds per case (e.g. the support
images a query was segmented from) reaches the page as generic notes ``{case: {title: text or list of texts}}``.

    write_test_report(output_dir / "report.html", record=record, metrics_csv=text, run=facts, overlays=..., notes=...)
    html_page(title, [section, ...]) / html_table(columns, rows) / td(...): what the protocol and benchmark pages use
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from utils.checkpoint import atomic_write_text
from utils.metrics import DISTANCE_METRICS, METRIC_NAMES, metric_columns

REPORT_HTML = "report.html"
METRIC_TITLES = {"dice": "DSC", "hd95": "HD95", "jaccard": "IoU", "asd": "ASD"}
CASE_METRICS = ("dice", "hd95")  # the per-case table's metrics (the paper's tables report these two)
DIGITS = 4  # shown digits; the exact value is in each cell's data-value (and its tooltip)
SORT_PARAMETER = "sort"

CSS = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2em 2em; color: #1b1f24; }
h1 { font-size: 1.45em; margin: 0 0 .4em; } h2 { font-size: 1.15em; margin: 1.4em 0 .4em; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: .1em 1.2em; margin: .4em 0; }
dl.facts dt { color: #57606a; } dl.facts dd { margin: 0; font-family: ui-monospace, monospace; word-break: break-all; }
table { border-collapse: collapse; margin: .4em 0; }
th, td { border: 1px solid #d0d7de; padding: .2em .55em; text-align: right; white-space: nowrap; }
th { background: #f3f5f7; position: sticky; top: 0; }
td.text, th.text { text-align: left; } td.notes { text-align: left; white-space: normal; min-width: 14em; }
tr.mean td { font-weight: 600; border-top: 2px solid #8c959f; }
table.sortable th[data-key] { cursor: pointer; user-select: none; }
table.sortable th[data-key]:hover { background: #e3e8ee; }
th[aria-sort=ascending]::after { content: " \\25B2"; } th[aria-sort=descending]::after { content: " \\25BC"; }
td img.thumb { height: 56px; vertical-align: middle; margin-right: .3em; image-rendering: pixelated; }
.scroll { overflow-x: auto; max-width: 100%; }
.note { color: #57606a; font-size: .92em; } .na { color: #8c959f; }
.low { background: #ffebe9; }
span.gap { display: inline-block; min-width: 3.6em; margin-left: .4em; padding: 0 .3em; border-radius: 3px; }
tr.ours td { font-weight: 600; background: #f6f8fa; } tr.same td:first-child { font-weight: 600; }
div.top { display: flex; flex-wrap: wrap; gap: .5em 2.5em; align-items: flex-start; }
div.top > div { flex: 0 1 36em; min-width: 22em; } div.top > figure { flex: 1 1 32em; }
figure { margin: .6em 0; } figure img { max-width: 100%; border: 1px solid #d0d7de; }
"""

# Sorts a table.sortable by a clicked header (again: the other direction; NaN / empty cells always last), and by
# #sort=KEY:asc|desc on load; records on <body> that it ran (data-script) and how many images loaded.
SORT_SCRIPT = """
(function () {
  "use strict";
  var body = document.body;
  window.addEventListener("error", function (event) { body.setAttribute("data-script-error", event.message); });
  function key(row, index, numeric) {
    var cell = row.cells[index];
    var text = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent.trim();
    if (!numeric) return text;
    var value = parseFloat(text);
    return isNaN(value) ? null : value;
  }
  function sortTable(table, index, direction) {
    var heads = table.tHead.rows[0].cells, head = heads[index], tbody = table.tBodies[0];
    var numeric = head.getAttribute("data-type") === "number";
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.sort(function (a, b) {
      var x = key(a, index, numeric), y = key(b, index, numeric);
      if (x === null || y === null) return (x === null) - (y === null);
      var order = numeric ? x - y : x.localeCompare(y, undefined, {numeric: true});
      return direction === "desc" ? -order : order;
    });
    rows.forEach(function (row) { tbody.appendChild(row); });
    for (var i = 0; i < heads.length; i++) heads[i].removeAttribute("aria-sort");
    head.setAttribute("aria-sort", direction === "desc" ? "descending" : "ascending");
    table.setAttribute("data-sorted-by", head.getAttribute("data-key") + ":" + direction);
  }
  var hash = location.hash;
  try { hash = decodeURIComponent(hash); } catch (error) { /* a malformed address: keep it as it is */ }
  var wanted = /^#sort=(.+):(asc|desc)$/.exec(hash);
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (head, index) {
      if (!head.hasAttribute("data-key")) return;
      head.addEventListener("click", function () {
        sortTable(table, index, head.getAttribute("aria-sort") === "ascending" ? "desc" : "asc");
      });
      if (wanted && head.getAttribute("data-key") === wanted[1]) sortTable(table, index, wanted[2]);
    });
  });
  window.addEventListener("load", function () {
    var loaded = 0, broken = 0;
    Array.prototype.forEach.call(document.images, function (image) {
      if (image.complete) { if (image.naturalWidth > 0) loaded++; else broken++; }
    });
    body.setAttribute("data-images-loaded", loaded);
    body.setAttribute("data-images-broken", broken);
  });
  body.setAttribute("data-script", "ok");
})();
"""


# ----------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """A table column: ``key`` names it for sorting (``data-key``, ``#sort=KEY:asc``; None: not sortable),
    ``numeric`` picks number or text order."""

    key: str | None
    title: str
    numeric: bool = True


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def is_missing(value: Any) -> bool:
    """None or NaN: shown as 'n/a' and sorted last."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def exact(value: Any) -> str:
    """The value as JSON writes it (a float's shortest round-trip form; 'nan' for NaN, 'null' for None)."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return json.dumps(value)


def td(content: str, *, value: str | None = None, cls: str | None = None, style: str | None = None,
       title: str | None = None, raw: bool = False) -> str:
    """One ``<td>``: ``content`` escaped unless ``raw``; ``value`` is the sort key (``data-value``)."""
    pairs = (("class", cls), ("style", style), ("title", title), ("data-value", value))
    attributes = "".join(f' {name}="{esc(text)}"' for name, text in pairs if text is not None)
    return f"<td{attributes}>{content if raw else esc(content)}</td>"


def number_td(value: float | None, digits: int = DIGITS, *, cls: str | None = None, style: str | None = None,
              extra: str = "") -> str:
    """A number shown to ``digits`` decimals, its exact value in ``data-value`` and the tooltip ('n/a' when
    missing); ``extra``: HTML after the number (e.g. a gap badge)."""
    if is_missing(value):
        return td('<span class="na">n/a</span>' + extra, value="nan", cls=cls, style=style, raw=True)
    text = exact(float(value))
    return td(f"{value:.{digits}f}{extra}", value=text, cls=cls, style=style, title=text, raw=True)


def html_table(columns: Sequence[Column], rows: Sequence[Sequence[str]], *, table_id: str | None = None,
               sorted_by: tuple[str, str] | None = None, row_classes: Sequence[str | None] | None = None) -> str:
    """A table of pre-rendered cells (:func:`td`). Sortable when a column has a key; ``sorted_by`` (key, 'asc' |
    'desc') marks the order the rows are already in."""
    sortable = any(column.key for column in columns)
    heads = []
    for column in columns:
        attributes = ""
        if column.key:
            attributes += f' data-key="{esc(column.key)}" data-type="{"number" if column.numeric else "text"}"'
            if sorted_by and sorted_by[0] == column.key:
                attributes += f' aria-sort="{"descending" if sorted_by[1] == "desc" else "ascending"}"'
        if not column.numeric:
            attributes += ' class="text"'
        heads.append(f"<th{attributes}>{esc(column.title)}</th>")
    body = []
    for index, cells in enumerate(rows):
        cls = row_classes[index] if row_classes else None
        body.append(f"<tr{f' class={chr(34)}{esc(cls)}{chr(34)}' if cls else ''}>{''.join(cells)}</tr>")
    attributes = (f' id="{esc(table_id)}"' if table_id else "") + (' class="sortable"' if sortable else "")
    if sortable and sorted_by:
        attributes += f' data-sorted-by="{esc(sorted_by[0])}:{esc(sorted_by[1])}"'
    return (f'<div class="scroll"><table{attributes}><thead><tr>{"".join(heads)}</tr></thead>'
            f'<tbody>\n{chr(10).join(body)}\n</tbody></table></div>')


def facts_list(facts: Mapping[str, Any]) -> str:
    """``<dl>`` of name: value pairs (missing values left out; dicts and lists as JSON)."""
    items = []
    for name, value in facts.items():
        if value is None or value == "":
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        items.append(f"<dt>{esc(name)}</dt><dd>{esc(text)}</dd>")
    return f'<dl class="facts">{"".join(items)}</dl>'


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def relative_href(path: str | os.PathLike, start: str | os.PathLike) -> str:
    """URL of ``path`` relative to the page's folder ``start`` (ValueError for a path outside it: a page must work
    when its folder is copied elsewhere)."""
    relative = Path(os.path.relpath(Path(path).resolve(), Path(start).resolve()))
    if relative.parts and relative.parts[0] == os.pardir:
        raise ValueError(f"{path} is not inside {start}")
    return quote(relative.as_posix())


def html_page(title: str, sections: Sequence[str]) -> str:
    """The whole document: inline CSS, the sections, the sort script."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n<h1>{esc(title)}</h1>\n"
            + "\n".join(sections) + f"\n<script>{SORT_SCRIPT}</script>\n</body></html>\n")


# ----------------------------------------------------------------------------------------------------------------
# The test page (test.py)
# ----------------------------------------------------------------------------------------------------------------
def read_metrics_csv(text: str, distance_unit: str = "pixel") -> dict[str, dict[str, dict[str, str]]]:
    """{case: {class: {metric: value as written}}} of a metrics.csv text (its distance columns in
    ``distance_unit``, named by ``utils.metrics.metric_columns``), cases in file order."""
    columns = dict(zip(METRIC_NAMES, metric_columns(distance_unit)))
    cases: dict[str, dict[str, dict[str, str]]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        cases.setdefault(row["case"], {})[row["class"]] = {name: row[column] for name, column in columns.items()}
    return cases


def metric_title(name: str, distance_unit: str) -> str:
    """A metric's column title; in mm a distance's names its unit ('HD95 (mm)'), in pixels it is the papers' title
    (as metrics.csv's columns; the page's note says the unit)."""
    title = METRIC_TITLES[name]
    return f"{title} (mm)" if distance_unit == "mm" and name in DISTANCE_METRICS else title


def case_mean(classes: Mapping[str, Mapping[str, str]], metric: str) -> float:
    """Mean of one metric over a case's classes, NaN ignored (NaN when every class is NaN), as the printed table."""
    values = [float(metrics[metric]) for metrics in classes.values()]
    finite = [value for value in values if not math.isnan(value)]
    return math.fsum(finite) / len(finite) if finite else math.nan


def worst_first(cases: Mapping[str, Mapping[str, Mapping[str, str]]]) -> list[str]:
    """Case names by mean DSC ascending (the worst first), cases without a DSC last, ties in file order."""
    names = list(cases)
    means = {name: case_mean(cases[name], "dice") for name in names}
    return sorted(names, key=lambda name: (math.isnan(means[name]), 0.0 if math.isnan(means[name]) else means[name]))


def dsc_boxplot_png(per_class: Mapping[str, Sequence[float]]) -> bytes:
    """Boxplot of per-case DSC per class, each case as a dot over its class's box (NaN left out)."""
    labels = list(per_class)
    data = [np.asarray([v for v in per_class[label] if not math.isnan(v)], dtype=float) for label in labels]
    figure = Figure(figsize=(max(4.0, 0.85 * len(labels) + 1.6), 3.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.boxplot(data, tick_labels=labels, showfliers=False, widths=0.55, medianprops={"color": "#cf222e"})
    for position, values in enumerate(data, start=1):  # evenly spread dots: deterministic, no random jitter
        offsets = np.linspace(-0.18, 0.18, len(values)) if len(values) > 1 else np.zeros(len(values))
        axes.scatter(position + offsets, values, s=12, color="#0969da", alpha=0.7, zorder=3)
    cases = max((len(values) for values in data), default=0)
    axes.set_ylim(-0.02, 1.02)
    axes.set_ylabel("DSC")
    axes.set_title(f"per-case DSC per class ({cases} cases)", fontsize=10)
    axes.grid(axis="y", alpha=0.3)
    if len(labels) > 4:
        for tick in axes.get_xticklabels():
            tick.set_rotation(30)
            tick.set_ha("right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def note_text(value: Any) -> str:
    return ", ".join(str(item) for item in value) if isinstance(value, (list, tuple)) else str(value)


def summary_table(record: Mapping[str, Any]) -> str:
    """Per class and mean, every metric of summary.json."""
    unit = record.get("distance_unit", "pixel")
    columns = [Column(None, "class", numeric=False), *(Column(None, metric_title(name, unit)) for name in METRIC_NAMES)]
    rows = [[td(entry["class"], cls="text"), *(number_td(entry[name]) for name in METRIC_NAMES)]
            for entry in record["per_class"]]
    rows.append([td("mean", cls="text"), *(number_td(record[f"mean_{name}"]) for name in METRIC_NAMES)])
    return html_table(columns, rows, table_id="summary",
                      row_classes=[None] * len(record["per_class"]) + ["mean"])


def cases_table(cases: Mapping[str, Mapping[str, Mapping[str, str]]], labels: Sequence[str],
                overlays: Mapping[str, Sequence[str]], notes: Mapping[str, Mapping[str, Any]],
                distance_unit: str = "pixel") -> str:
    """One row per case, worst mean DSC first: mean DSC / HD95, notes, overlay thumbnails (near the name, before the
    class columns that may scroll), each class's DSC / HD95."""
    note_titles = list(dict.fromkeys(title for entry in notes.values() for title in entry))
    columns = [Column("case", "case", numeric=False),
               *(Column(f"mean.{name}", f"mean {metric_title(name, distance_unit)}") for name in CASE_METRICS),
               *(Column(f"note.{title}", title, numeric=False) for title in note_titles),
               *([Column(None, "overlays", numeric=False)] if overlays else []),
               *(Column(f"{label}.{name}", f"{label} {metric_title(name, distance_unit)}") for label in labels
                 for name in CASE_METRICS)]
    rows = []
    for case in worst_first(cases):
        classes = cases[case]
        cells = [td(case, cls="text"), *(number_td(case_mean(classes, name)) for name in CASE_METRICS)]
        for title in note_titles:
            value = notes.get(case, {}).get(title)
            cells.append(td("" if value is None else note_text(value), cls="notes"))
        if overlays:
            links = "".join(f'<a href="{esc(href)}"><img class="thumb" loading="lazy" src="{esc(href)}" '
                            f'alt="{esc(href.rsplit("/", 1)[-1])}"></a>' for href in overlays.get(case, ()))
            cells.append(td(links, cls="text", raw=True))
        for label in labels:
            for name in CASE_METRICS:
                text = classes.get(label, {}).get(name, "nan")
                value = float(text)
                low = name == "dice" and not math.isnan(value) and value < 0.5
                cells.append(td('<span class="na">n/a</span>', value="nan", raw=True) if math.isnan(value)
                             else td(f"{value:.{DIGITS}f}", value=text, title=text, cls="low" if low else None))
        rows.append(cells)
    return html_table(columns, rows, table_id="cases", sorted_by=("mean.dice", "asc"))


def test_report_html(*, record: Mapping[str, Any], metrics_csv: str, run: Mapping[str, Any],
                     overlays: Mapping[str, Sequence[str]] | None = None,
                     notes: Mapping[str, Mapping[str, Any]] | None = None, title: str | None = None) -> str:
    """The test page: run facts and batch context, the DSC boxplot, summary.json's numbers, the per-case table of
    metrics.csv (``overlays``: {case: hrefs relative to the page}; ``notes``: {case: {title: text}})."""
    unit = record.get("distance_unit", "pixel")
    cases = read_metrics_csv(metrics_csv, unit)
    labels = [entry["class"] for entry in record["per_class"]]
    per_class = {label: [float(cases[case].get(label, {}).get("dice", "nan")) for case in cases] for label in labels}
    overlays, notes = overlays or {}, notes or {}
    note_titles = list(dict.fromkeys(title for entry in notes.values() for title in entry))
    figure = png_data_uri(dsc_boxplot_png(per_class))
    context = f"<h2>Batch context</h2>{facts_list(record['context'])}" if record.get("context") else ""
    sections = [
        f'<div class="top"><div>{facts_list(run)}{context}</div>'
        f'<figure><img id="dsc-boxplot" src="{figure}" alt="boxplot of per-case DSC per class"></figure></div>',
        "<h2>Summary</h2>",
        f'<p class="note">As in summary.json: {len(cases)} cases, {esc(record.get("protocol"))} protocol; '
        f"means over the cases, then over the classes; HD95 and ASD in "
        f"{'millimetres (from the voxel spacing)' if unit == 'mm' else 'pixels (voxel steps)'}. Hover a number for "
        f"its exact value.</p>",
        summary_table(record),
        "<h2>Cases</h2>",
        '<p class="note">One row per case of metrics.csv, the worst mean DSC first (means over the classes, NaN '
        "left out); click a header to sort by it, again to reverse. DSC below 0.5 is shaded."
        + (" Each overlay (click it for the full size): ground truth | prediction" if overlays else "")
        + (f"; its second row: the references the prediction was made from ({esc(', '.join(note_titles))})."
           if overlays and note_titles else "." if overlays else "") + "</p>",
        cases_table(cases, labels, overlays, notes, unit),
    ]
    return html_page(title or "Test results", sections)


def write_test_report(path: str | os.PathLike, *, record: Mapping[str, Any], metrics_csv: str,
                      run: Mapping[str, Any], overlays: Mapping[str, Sequence[str | os.PathLike]] | None = None,
                      notes: Mapping[str, Mapping[str, Any]] | None = None, title: str | None = None) -> Path:
    """Write :func:`test_report_html` atomically; ``overlays``: {case: files inside the page's folder}."""
    path = Path(path)
    hrefs = {case: [relative_href(file, path.parent) for file in files] for case, files in (overlays or {}).items()}
    atomic_write_text(path, test_report_html(record=record, metrics_csv=metrics_csv, run=run, overlays=hrefs,
                                             notes=notes, title=title))
    return path

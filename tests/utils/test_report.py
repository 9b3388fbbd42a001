"""The results page test.py writes (utils/report.py): parsed back with html.parser, it lists every case of
metrics.csv with its numbers, summary.json's numbers, only links that resolve inside the output folder, each support
set model's query supports (against a brute-force HOG ranking), and nothing of it is left by a failed run; rendered
in a real headless Chromium (skipped where none is installed), its script runs, sorts on a click, and it draws."""
from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from datasets import get_dataset
from datasets.phantoms.synapse import write_synapse_phantom
from networks import create_model
from tests.datasets.test_support_sets import brute_force_topk, hog_features
from utils import report
from utils.checkpoint import model_checkpoint, save_checkpoint
from utils.cli import build_test_parser
from utils.evaluator import evaluate

pytestmark = pytest.mark.usefixtures("single_thread")

SIZE = 64
BUSI_SIZE, SHOTS = 32, 2
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WINDOW = (1280, 1400)


# ----------------------------------------------------------------------------------------------------------------
# Reading a page back
# ----------------------------------------------------------------------------------------------------------------
class Page(HTMLParser):
    """What a reader sees of a page: tables by id (header cells, body rows of cells), links, images, facts."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, dict] = {}
        self.links: list[str] = []
        self.images: list[str] = []
        self.facts: dict[str, str] = {}
        self.body: dict[str, str] = {}
        self._table = self._cell = self._fact = None
        self._row: list | None = None
        self._text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        elif tag == "table":
            self._table = self.tables.setdefault(attrs.get("id") or f"table{len(self.tables)}",
                                                 {"attrs": attrs, "head": [], "rows": [], "row_attrs": []})
        elif tag == "tr" and self._table is not None:
            self._row, self._row_attrs = [], attrs
        elif tag in ("td", "th") and self._row is not None:
            self._cell = {"tag": tag, "attrs": attrs, "text": "", "links": [], "images": [], "spans": []}
        elif tag == "span" and self._cell is not None:
            self._cell["spans"].append(attrs)
        elif tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
            if self._cell is not None:
                self._cell["links"].append(attrs["href"])
        elif tag == "img":
            self.images.append(attrs["src"])
            if self._cell is not None:
                self._cell["images"].append(attrs["src"])
        elif tag in ("dt", "dd"):
            self._fact, self._text = tag, []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._fact is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._cell["text"] = self._cell["text"].strip()
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if all(cell["tag"] == "th" for cell in self._row):
                self._table["head"].extend(self._row)
            else:
                self._table["rows"].append(self._row)
                self._table["row_attrs"].append(self._row_attrs)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "dt":
            self._key, self._fact = "".join(self._text), None
        elif tag == "dd":
            self.facts[self._key] = "".join(self._text)
            self._fact = None

    def column(self, table: str, key: str) -> int:
        return [cell["attrs"].get("data-key") for cell in self.tables[table]["head"]].index(key)

    def titles(self, table: str) -> list[str]:
        return [cell["text"] for cell in self.tables[table]["head"]]


def read_csv(directory: Path) -> dict[str, dict[str, dict[str, str]]]:
    """{case: {class: row}} of metrics.csv, read here with the csv module."""
    cases: dict[str, dict[str, dict[str, str]]] = {}
    with open(directory / "metrics.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            cases.setdefault(row["case"], {})[row["class"]] = row
    return cases


def nan_mean(values: list[float]) -> float:
    """The exact (correctly rounded) mean of the finite values: with a plain float sum, two cases of equal class
    values in another order could compare unequal and the expected worst-first order would depend on rounding."""
    finite = [value for value in values if not math.isnan(value)]
    return math.fsum(finite) / len(finite) if finite else math.nan


def expected_order(cases: dict, metric: str, descending: bool = False) -> list[str]:
    """Cases by their class-mean ``metric`` (NaN ignored), cases without one last, ties in file order."""
    means = {case: nan_mean([float(row[metric]) for row in classes.values()]) for case, classes in cases.items()}
    known = [case for case in cases if not math.isnan(means[case])]
    return sorted(known, key=lambda case: means[case], reverse=descending) + [c for c in cases if c not in known]


def shown(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


# ----------------------------------------------------------------------------------------------------------------
# Runs: a volume set (Synapse phantom, strict protocol: absent classes are NaN) and a support-set model (BUSI)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synapse_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report_synapse")
    paths = write_synapse_phantom(root / "Synapse", root / "lists", num_train=1, num_test=3, size=SIZE, depth=4,
                                  seed=0)
    model = create_model("unet", num_classes=9, in_chans=1, img_size=SIZE, encoder_name="resnet18", pretrained=False)
    save_checkpoint(root / "unet.pth", {**model_checkpoint(model), "args": {"dataset": "synapse"}})
    out = root / "test"
    evaluate(build_test_parser("synapse").parse_config(
        ["--checkpoint", str(root / "unet.pth"), "--volume_path", paths["volume_path"], "--list_dir",
         paths["list_dir"], "--output_dir", str(out), "--device", "cpu", "--save-overlays", "2",
         "--metrics", "strict"]))
    return out


@pytest.fixture(scope="module")
def busi_run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("report_busi")
    paths = get_dataset("busi").phantom.write(root / "BUSI", root / "lists" / "lists_BUSI", num_train=6, num_val=1,
                                              num_test=3, size=BUSI_SIZE, seed=4)
    model = create_model("matchseg", num_classes=2, in_chans=3, img_size=BUSI_SIZE, widths=(8, 8, 8, 8))
    args = {"dataset": "busi", "root_path": paths["root_path"], "list_dir": paths["list_dir"], "seed": 0,
            "support_size": SHOTS, "support_selection": "hog", "support_cache": str(root / "cache")}
    save_checkpoint(root / "matchseg.pth", {**model_checkpoint(model), "args": args})
    out = root / "test"
    evaluate(build_test_parser("busi").parse_config(
        ["--checkpoint", str(root / "matchseg.pth"), "--volume_path", paths["volume_path"], "--list_dir",
         paths["list_dir"], "--output_dir", str(out), "--device", "cpu", "--save-overlays", "1"]))
    return dict(out=out, paths=paths, checkpoint=str(root / "matchseg.pth"))


@pytest.fixture(params=["synapse", "busi"])
def run_dir(request) -> Path:
    if request.param == "synapse":
        return request.getfixturevalue("synapse_run")
    return request.getfixturevalue("busi_run")["out"]


def read_page(directory: Path) -> Page:
    return Page((directory / report.REPORT_HTML).read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------------------------------------------
# The page against metrics.csv, summary.json and the files
# ----------------------------------------------------------------------------------------------------------------
def test_the_case_table_is_metrics_csv_worst_mean_dsc_first(run_dir):
    cases, page = read_csv(run_dir), read_page(run_dir)
    table = page.tables["cases"]
    rows = {row[0]["text"]: row for row in table["rows"]}
    assert [row[0]["text"] for row in table["rows"]] == expected_order(cases, "dice")  # each case once, worst first
    assert set(rows) == set(cases) and len(table["rows"]) == len(cases)
    assert table["attrs"]["data-sorted-by"] == "mean.dice:asc"
    for case, classes in cases.items():
        row = rows[case]
        for metric in ("dice", "hd95"):
            mean = nan_mean([float(entry[metric]) for entry in classes.values()])
            cell = row[page.column("cases", f"mean.{metric}")]
            assert cell["text"] == shown(mean)
            assert math.isnan(mean) if cell["attrs"]["data-value"] == "nan" else \
                float(cell["attrs"]["data-value"]) == pytest.approx(mean, rel=1e-12)
            for label, entry in classes.items():
                cell = row[page.column("cases", f"{label}.{metric}")]
                assert cell["attrs"]["data-value"] == entry[metric]  # the number as metrics.csv writes it
                assert cell["text"] == shown(float(entry[metric]))
    some_class = next(iter(next(iter(cases.values()))))
    assert f"{some_class} DSC" in page.titles("cases") and f"{some_class} HD95" in page.titles("cases")


def test_the_summary_is_summary_json(run_dir):
    summary, page = json.loads((run_dir / "summary.json").read_text()), read_page(run_dir)
    table = page.tables["summary"]
    assert page.titles("summary") == ["class", "DSC", "HD95", "IoU", "ASD"]
    expected = [[entry["class"], *(entry[name] for name in ("dice", "hd95", "jaccard", "asd"))]
                for entry in summary["per_class"]]
    expected.append(["mean", *(summary[f"mean_{name}"] for name in ("dice", "hd95", "jaccard", "asd"))])
    assert len(table["rows"]) == len(expected)
    for row, values in zip(table["rows"], expected):
        assert row[0]["text"] == values[0]
        for cell, value in zip(row[1:], values[1:]):
            if value is None:  # summary.json's null (NaN)
                assert cell["text"] == "n/a" and cell["attrs"]["data-value"] == "nan"
            else:
                assert float(cell["attrs"]["data-value"]) == value and cell["text"] == f"{value:.4f}"
    assert page.facts["checkpoint"] == summary["checkpoint"]
    assert page.facts["metrics protocol"] == summary["protocol"]
    assert page.facts["test list"].startswith(f"test_vol ({summary['num_cases']} volume") or \
        page.facts["test list"].startswith(f"test ({summary['num_cases']} image")


def test_every_link_resolves_inside_the_output_folder_and_each_case_links_its_overlays(run_dir):
    page = read_page(run_dir)
    local = [href for href in page.links + page.images if not href.startswith("data:")]
    assert local, "the runs write overlays: the page links them"
    for href in local:
        target = (run_dir / unquote(href)).resolve()
        assert target.is_file() and target.is_relative_to(run_dir.resolve()), href
    overlays = sorted(path.name for path in (run_dir / "overlays").glob("*.png"))
    column = page.titles("cases").index("overlays")
    linked = []
    for row in page.tables["cases"]["rows"]:
        case, cell = row[0]["text"], row[column]
        names = [unquote(href).split("/")[-1] for href in cell["links"]]
        assert names == [unquote(src).split("/")[-1] for src in cell["images"]]  # thumbnails of what is linked
        assert names and all(name == f"{case}.png" or name.startswith(f"{case}_slice") for name in names)
        linked += names
    assert sorted(linked) == overlays  # every overlay, once


def test_the_boxplot_is_an_embedded_png_at_the_top(run_dir):
    text = (run_dir / report.REPORT_HTML).read_text()
    page = Page(text)
    figure = page.images[0]
    assert figure.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(figure.split(",", 1)[1])))
    pixels = np.asarray(image.convert("RGB"))
    assert image.size[0] >= 400 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # drawn, not blank
    assert text.index('id="dsc-boxplot"') < text.index('id="summary"') < text.index('id="cases"')


def test_a_support_set_run_shows_each_querys_supports_and_its_context(busi_run):
    out, paths = busi_run["out"], busi_run["paths"]
    page, summary = read_page(out), json.loads((out / "summary.json").read_text())
    spec = get_dataset("busi")
    pool = spec.build(paths["root_path"], paths["list_dir"], "train", 2)
    queries = spec.build(paths["root_path"], paths["list_dir"], "test", 2)
    ranking = brute_force_topk(hog_features([queries.load(i)[0] for i in range(len(queries))]),
                               hog_features([pool.load(i)[0] for i in range(len(pool))]), SHOTS, lambda q, p: False)
    expected = {queries.case_name(queries.entries[q]): ", ".join(pool.case_name(pool.entries[p]) for p in best)
                for q, best in enumerate(ranking)}
    column = page.column("cases", "note.supports")
    assert {row[0]["text"]: row[column]["text"] for row in page.tables["cases"]["rows"]} == expected
    for key, value in summary["context"].items():
        assert page.facts[key] == (value if isinstance(value, str) else json.dumps(value))
    assert page.facts["model"] == "matchseg" and page.facts["data set"] == "busi"


def test_a_volume_run_has_no_support_column(synapse_run):
    page = read_page(synapse_run)
    assert not any(key and key.startswith("note.") for key in
                   (cell["attrs"].get("data-key") for cell in page.tables["cases"]["head"]))
    assert "support_backend" not in page.facts and page.facts["model"] == "unet"


def test_a_run_failing_while_writing_its_page_leaves_nothing(busi_run, tmp_path, monkeypatch):
    def broken(_per_class):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(report, "dsc_boxplot_png", broken)
    paths, out = busi_run["paths"], tmp_path / "test"
    config = build_test_parser("busi").parse_config(
        ["--checkpoint", busi_run["checkpoint"], "--volume_path", paths["volume_path"], "--list_dir",
         paths["list_dir"], "--output_dir", str(out), "--device", "cpu", "--save-overlays", "1"])
    with pytest.raises(RuntimeError, match="figure failed"):
        evaluate(config)
    assert not out.exists()


def test_a_hand_made_page_escapes_names_and_sorts_missing_values_last(tmp_path):
    record = {"mean_dice": 0.5, "mean_hd95": None, "mean_jaccard": 0.25, "mean_asd": 1.0, "protocol": "strict",
              "per_class": [{"class": "a<b", "dice": 0.5, "hd95": None, "jaccard": 0.25, "asd": 1.0}]}
    metrics = ("case,class,dice,hd95,jaccard,asd\n"
               "x&1,a<b,0.9,2,0.8,1\n\"y,2\",a<b,nan,nan,nan,nan\nz\"3,a<b,0.1,7.5,0.05,3\n")
    (tmp_path / "overlays").mkdir()
    (tmp_path / "overlays" / "x&1 #.png").write_bytes(b"png")
    report.write_test_report(tmp_path / "report.html", record=record, metrics_csv=metrics, run={"model": "m<1>"},
                             overlays={"x&1": [tmp_path / "overlays" / "x&1 #.png"]},
                             notes={"z\"3": {"ref": ["p", "q"]}})
    page = read_page(tmp_path)
    rows = page.tables["cases"]["rows"]
    assert [row[0]["text"] for row in rows] == ['z"3', "x&1", "y,2"]  # worst first, no DSC last
    assert page.titles("cases") == ["case", "mean DSC", "mean HD95", "ref", "overlays", "a<b DSC", "a<b HD95"]
    assert rows[0][page.column("cases", "note.ref")]["text"] == "p, q" and page.facts["model"] == "m<1>"
    overlays = page.titles("cases").index("overlays")
    assert rows[1][overlays]["links"] == ["overlays/x%261%20%23.png"] and rows[2][overlays]["links"] == []
    assert (tmp_path / unquote(rows[1][overlays]["links"][0])).is_file()
    assert rows[2][page.column("cases", "mean.dice")]["text"] == "n/a"
    with pytest.raises(ValueError, match="not inside"):
        report.relative_href(tmp_path.parent / "elsewhere.png", tmp_path)
    assert not list(tmp_path.glob("*.tmp"))


# ----------------------------------------------------------------------------------------------------------------
# A real browser
# ----------------------------------------------------------------------------------------------------------------
def browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def headless(executable: str, profile: Path, *arguments: str) -> subprocess.CompletedProcess:
    """One headless Chromium call, isolated from the network and from any profile (no sync, no updates)."""
    profile.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
         *arguments], capture_output=True, text=True, timeout=180)


def dom(executable: str, profile: Path, url: str) -> Page:
    result = headless(executable, profile, "--virtual-time-budget=5000", "--dump-dom", url)
    assert result.returncode == 0 and "<html" in result.stdout, result.stderr[-2000:]
    return Page(result.stdout)


@pytest.fixture(scope="module")
def chromium() -> str:
    executable = browser()
    if executable is None:
        missing = "no Chromium installed (apt-get install chromium): the page is not rendered in a real browser"
        if os.environ.get("REQUIRE_BROWSER") == "1":  # set by .ci/run, which installs it
            pytest.fail(missing)
        pytest.skip(missing)
    return executable


def test_chromium_runs_the_script_loads_every_image_and_sorts_by_the_address(chromium, busi_run, tmp_path):
    out = busi_run["out"]
    url = (out / report.REPORT_HTML).resolve().as_uri()
    cases, page = read_csv(out), read_page(out)
    rendered = dom(chromium, tmp_path / "profile", url)
    assert rendered.body.get("data-script") == "ok" and "data-script-error" not in rendered.body
    assert rendered.body["data-images-broken"] == "0"
    assert int(rendered.body["data-images-loaded"]) == len(page.images)  # the boxplot and every thumbnail
    assert [row[0]["text"] for row in rendered.tables["cases"]["rows"]] == expected_order(cases, "dice")

    rendered = dom(chromium, tmp_path / "profile", url + "#sort=mean.hd95:desc")
    assert rendered.tables["cases"]["attrs"]["data-sorted-by"] == "mean.hd95:desc"
    assert [row[0]["text"] for row in rendered.tables["cases"]["rows"]] == expected_order(cases, "hd95", True)


def test_chromium_sorts_on_clicks(chromium, synapse_run, tmp_path):
    """A page beside the report clicks a header twice in the report (an iframe) and writes down the orders. The
    column clicked is the class whose HD95 has the most distinct values (an untrained model leaves some all-NaN);
    the page's sort is stable, so tied cases keep the order they had before the click, and n/a goes last."""
    cases = read_csv(synapse_run)
    labels = list(next(iter(cases.values())))

    def hd95(case: str, name: str) -> float:
        return float(cases[case][name]["hd95"])

    def distinct(name: str) -> int:
        return len({hd95(case, name) for case in cases if not math.isnan(hd95(case, name))})

    label = max(labels, key=distinct)
    assert distinct(label) >= 2, f"no HD95 column of {list(cases)} has two distinct values to sort"
    shown = [row[0]["text"] for row in read_page(synapse_run).tables["cases"]["rows"]]  # before any click
    harness = tmp_path / "click.html"
    harness.write_text(f"""<!DOCTYPE html><html><body><iframe id="page" width="1200" height="800"
src="{(synapse_run / report.REPORT_HTML).resolve().as_uri()}"></iframe><pre id="result"></pre><script>
document.getElementById("page").addEventListener("load", function () {{
  var doc = this.contentDocument, result = {{}};
  function order() {{ return Array.prototype.map.call(doc.querySelectorAll("#cases tbody tr"),
                                                      function (row) {{ return row.cells[0].textContent; }}); }}
  try {{
    var head = doc.querySelector('#cases th[data-key="{label}.hd95"]');
    head.click(); result.first = order(); result.firstSort = head.getAttribute("aria-sort");
    head.click(); result.second = order(); result.secondSort = head.getAttribute("aria-sort");
    doc.querySelector('#cases th[data-key="case"]').click(); result.byCase = order();
    result.script = doc.body.getAttribute("data-script");
  }} catch (error) {{ result.error = String(error); }}
  document.getElementById("result").textContent = JSON.stringify(result);
}});
</script></body></html>""")
    result = headless(chromium, tmp_path / "profile", "--allow-file-access-from-files", "--virtual-time-budget=5000",
                      "--dump-dom", harness.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout.split('<pre id="result">', 1)[1].split("</pre>", 1)[0]
    clicks = json.loads(text.replace("&quot;", '"').replace("&amp;", "&"))
    assert "error" not in clicks and clicks["script"] == "ok", clicks

    def by_class(current: list[str], descending: bool) -> list[str]:
        """A stable sort of the order ``current`` (Python's, as the browser's): ties keep it, n/a last."""
        known = [case for case in current if not math.isnan(hd95(case, label))]
        ordered = sorted(known, key=lambda case: hd95(case, label), reverse=descending)
        return ordered + [case for case in current if case not in known]

    assert (clicks["first"], clicks["firstSort"]) == (by_class(shown, False), "ascending")
    assert (clicks["second"], clicks["secondSort"]) == (by_class(clicks["first"], True), "descending")
    assert clicks["byCase"] == sorted(cases)


def test_chromium_draws_the_page(chromium, busi_run, tmp_path):
    screenshot = tmp_path / "page.png"
    result = headless(chromium, tmp_path / "profile", f"--screenshot={screenshot}",
                      (busi_run["out"] / report.REPORT_HTML).resolve().as_uri())
    assert result.returncode == 0 and screenshot.is_file(), result.stderr[-2000:]
    image = Image.open(screenshot)
    assert image.size == WINDOW
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 50 and (pixels < 128).all(axis=1).mean() > 0.002  # text and figures

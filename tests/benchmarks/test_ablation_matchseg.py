"""benchmarks/ablation_matchseg.py for one epoch on a small BUSI phantom: each variant trains and tests through the
scripts' parsers with its own backend and model, its row is what its own summary.json says, a finished variant is
read back rather than retrained, and the report is written atomically."""
import json
import sys
from pathlib import Path

import pytest
import torch

from datasets import get_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import ablation_matchseg  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

VARIANTS = ("matchseg_random", "universeg_hog")
SEED = 7


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    paths = get_dataset("busi").phantom.write(root / "BUSI", root / "lists" / "lists_BUSI", num_train=10, num_val=2,
                                              num_test=3, size=64, seed=3)
    out, report = root / "runs", root / "results" / "ablation.json"
    argv = ["--volume_path", paths["volume_path"], "--list_dir", paths["list_dir"], "--out", str(out),
            "--variants", *VARIANTS, "--seeds", str(SEED), "--max_epochs", "1", "--json", str(report)]
    assert ablation_matchseg.main(argv) == 0
    return argv, out, report


def test_rows_are_the_variants_own_summaries(ablation):
    _, out, report = ablation
    rows = json.loads(report.read_text())["rows"]
    assert [row["variant"] for row in rows] == list(VARIANTS)
    for row in rows:
        summary = json.loads((out / f"{row['variant']}_seed{SEED}" / "test" / "summary.json").read_text())
        assert row["mean_dice"] == summary["mean_dice"] and row["mean_iou"] == summary["mean_jaccard"]
        assert row["support_backend"] == summary["context"]["support_backend"]
        assert summary["num_cases"] == 3 and row["train_s"] > 0 and row["seed"] == SEED
    assert rows[0]["support_backend"].startswith("random(") and rows[1]["support_backend"].startswith("hog(")
    assert not list(report.parent.glob("*.tmp*"))


def test_each_variant_trains_its_own_model_with_the_recorded_command(ablation):
    _, out, report = ablation
    rows = {row["variant"]: row for row in json.loads(report.read_text())["rows"]}
    for name, arch, joint_attention in (("matchseg_random", "matchseg", 1), ("universeg_hog", "universeg", 0)):
        checkpoint = torch.load(out / f"{name}_seed{SEED}" / "best_val.pth", map_location="cpu", weights_only=False)
        assert checkpoint["arch"] == arch and checkpoint["next_epoch"] == 1
        assert checkpoint["options"]["run"]["seed"] == SEED
        model_config = checkpoint["model_config"]
        assert model_config["joint_attention"] == joint_attention and list(model_config["widths"]) == [32] * 4
        assert model_config["in_chans"] == 3  # the data set's channels, for universeg too
        assert f"--model {arch}" in rows[name]["train_command"]
        assert f"--support_selection {ablation_matchseg.VARIANTS[name][1]}" in rows[name]["train_command"]


def test_a_finished_variant_is_read_back_not_retrained(ablation):
    argv, out, report = ablation
    checkpoint = out / f"{VARIANTS[0]}_seed{SEED}" / "best_val.pth"
    stamp = checkpoint.stat().st_mtime_ns
    before = json.loads(report.read_text())["rows"]
    assert ablation_matchseg.main(argv) == 0
    assert checkpoint.stat().st_mtime_ns == stamp
    assert json.loads(report.read_text())["rows"] == before


def test_the_table_averages_each_variant_over_its_seeds():
    rows = [{"variant": "a", "mean_dice": 0.5, "mean_iou": 0.25, "mean_hd95": 2.0, "train_s": 10.0},
            {"variant": "a", "mean_dice": 0.7, "mean_iou": 0.75, "mean_hd95": None, "train_s": 20.0},
            {"variant": "b", "mean_dice": 0.9, "mean_iou": 0.8, "mean_hd95": 1.0, "train_s": None}]
    lines = ablation_matchseg.markdown_table(rows).splitlines()
    assert lines[2] == "| a | 2 | 0.600 | 0.500 | 2.000 | 0.500, 0.700 | 15 |"
    assert lines[3] == "| b | 1 | 0.900 | 0.800 | 1.000 | 0.900 | n/a |"


def test_the_page_lists_every_run_and_each_variants_means(ablation):
    import statistics
    from urllib.parse import unquote

    from tests.utils.test_report import Page

    _, out, report = ablation
    rows = json.loads(report.read_text())["rows"]
    page = Page((out / "report.html").read_text(encoding="utf-8"))
    runs = page.tables["runs"]["rows"]
    assert [(row[0]["text"], row[1]["text"]) for row in runs] == [(row["variant"], str(row["seed"])) for row in rows]
    for cells, row in zip(runs, rows):
        assert cells[2]["text"] == row["model"] and cells[3]["text"] == row["support_backend"]
        for cell, key in zip(cells[4:8], ("mean_dice", "mean_iou", "mean_hd95", "train_s")):
            assert float(cell["attrs"]["data-value"]) == row[key]
        (href,) = cells[8]["links"]
        target = (out / unquote(href)).resolve()
        assert target == (out / f"{row['variant']}_seed{row['seed']}" / "test" / "report.html").resolve()
        assert target.is_file()
    for cells, row in zip(page.tables["variants"]["rows"], rows):  # one seed per variant here
        assert cells[0]["text"] == row["variant"] and cells[1]["text"] == "1"
        assert float(cells[2]["attrs"]["data-value"]) == statistics.fmean([row["mean_dice"]])
        assert cells[5]["text"] == f"{row['mean_dice']:.3f}"

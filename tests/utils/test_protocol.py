"""MatchSeg's evaluation protocols (datasets/protocols.py) and protocol.py (utils/protocol/): the image-weighted
average, the published tables, checkpoint-to-column matching, end to end on phantoms with a tiny unet, bad input."""
from __future__ import annotations

import csv
import json
import math
import shutil

import pytest
import torch

from datasets import get_dataset, list_datasets
from datasets.protocols import (
    AVERAGE_COLUMN, PROTOCOLS, PUBLISHED, Column, Protocol, get_protocol, published_rows,
)
from networks import create_model
from tests.conftest import TINY_MODEL_OPTIONS
from utils.checkpoint import CheckpointError, model_checkpoint, save_checkpoint
from utils.cli import build_train_parser
from utils.protocol import main as protocol_main
from utils.protocol.columns import CheckpointInfo, column_average, match_checkpoints, weighted_average
from utils.protocol.results import results_markdown
from utils.trainer import train

pytestmark = pytest.mark.usefixtures("single_thread")

SIZE = 32
PHANTOM = dict(num_train=4, num_val=1, num_test=2, size=SIZE)
HAM_SIZES = {"AKIEC": 327, "BCC": 514, "BKL": 1099, "DF": 115, "MEL": 1113, "VASC": 142}  # spec §6


def read_lines(path) -> list[str]:
    with open(path) as handle:
        return handle.read().splitlines()


def write_phantom(dataset: str, root) -> dict:
    phantom = get_dataset(dataset).phantom
    return phantom.write(root / phantom.dir_name, root / "lists" / phantom.list_dir_name, seed=0, **PHANTOM)


def train_tiny_unet(dataset: str, phantom: dict, output_dir) -> str:
    """One optimizer step of a tiny unet on the phantom (the train.py entry); returns last.pth."""
    options = {**TINY_MODEL_OPTIONS["unet"], "img_size": SIZE}
    config = build_train_parser(dataset).parse_config(
        ["--model", "unet", "--root_path", str(phantom["root_path"]), "--volume_path", str(phantom["volume_path"]),
         "--list_dir", str(phantom["list_dir"]), *(text for k, v in options.items() for text in (f"--{k}", str(v))),
         "--pretrained", "none", "--device", "cpu", "--batch_size", "2", "--num_workers", "0", "--max_steps", "1",
         "--max_epochs", "1", "--val_list", "none", "--output_dir", str(output_dir)])
    assert train(config)["global_step"] == 1
    return str(output_dir / "last.pth")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """BUSI, BUS and HAM10000 phantoms under one data root; tiny unets trained on BUSI and on HAM10000."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("protocol")
        data = root / "data"
        phantoms = {name: write_phantom(name, data) for name in ("busi", "bus", "ham10000")}
        return dict(root=root, data=data, phantoms=phantoms,
                    busi=train_tiny_unet("busi", phantoms["busi"], root / "run_busi"),
                    ham10000=train_tiny_unet("ham10000", phantoms["ham10000"], root / "run_ham"))
    finally:
        torch.set_num_threads(threads)


def error_line(capsys, printed: list | None = None) -> str:
    """The one ``error:`` line on stderr (stdout appended to ``printed``)."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    if printed is not None:
        printed.append(captured.out)
    return lines[0]


def column_means(directory) -> dict:
    """Per-image means of a column's metrics.csv and its summary.json."""
    with open(directory / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    means = {key: sum(float(row[key]) for row in rows) / len(rows) for key in ("dice", "jaccard", "hd95")}
    return dict(rows=len(rows), **means, summary=json.loads((directory / "summary.json").read_text()))


# ----------------------------------------------------------------------------------------------------------------
# Averages and the published tables
# ----------------------------------------------------------------------------------------------------------------
def test_weighted_average_matches_hand_computation():
    assert weighted_average([0.5, 0.8, 0.2], [1, 3, 6]) == pytest.approx((0.5 + 2.4 + 1.2) / 10)  # 0.41
    assert weighted_average([0.7], [5]) == pytest.approx(0.7)
    assert math.isnan(weighted_average([0.5, math.nan], [1, 1]))
    for values, weights in (([], []), ([0.5], [0]), ([0.5, 0.2], [1])):
        with pytest.raises(ValueError):
            weighted_average(values, weights)

    protocol = get_protocol("ham10000_nv")
    counts = dict(zip(HAM_SIZES, (2, 1, 4, 1, 3, 1)))
    dice = dict(zip(HAM_SIZES, (0.6, 0.5, 0.9, 0.4, 0.8, 0.7)))
    columns = {name: {"num_cases": counts[name], "dice": dice[name], "iou": dice[name] / 2, "hd95": 10.0}
               for name in HAM_SIZES}
    average = column_average(protocol, columns)
    # (2*.6 + .5 + 4*.9 + .4 + 3*.8 + .7) / 12 = 8.8 / 12
    assert average == {"kind": "image_weighted", "num_cases": 12, "dice": pytest.approx(8.8 / 12),
                       "iou": pytest.approx(4.4 / 12), "hd95": pytest.approx(10.0)}
    assert column_average(get_protocol("busi_to_bus"), {"BUSI_to_BUS": columns["MEL"]}) is None


def test_published_ham_averages_are_image_weighted_over_the_full_type_sizes():
    protocol = get_protocol("ham10000_nv")
    assert {column.name: column.weight for column in protocol.columns} == HAM_SIZES
    assert [column.test_list for column in protocol.columns] == [f"test_{n.lower()}" for n in HAM_SIZES]
    weights = [column.weight for column in protocol.columns]

    def recomputed(model):
        row = PUBLISHED["ham10000_nv"][model]
        return weighted_average([row[column.name] for column in protocol.columns], weights)

    assert recomputed("MatchSeg") == pytest.approx(85.33, abs=0.01)
    for model in ("UNet", "AttentionUNet", "UCTransNet"):  # exact (spec §6)
        assert recomputed(model) == pytest.approx(PUBLISHED["ham10000_nv"][model][AVERAGE_COLUMN], abs=0.01)
    for model in ("UNext", "PA-Net", "ASG-Net", "UniverSeg"):  # within about 0.1 (ASG-Net: 46.32 vs 46.42)
        assert recomputed(model) == pytest.approx(PUBLISHED["ham10000_nv"][model][AVERAGE_COLUMN], abs=0.11)
    assert abs(recomputed("ACC-UNet") - PUBLISHED["ham10000_nv"]["ACC-UNet"][AVERAGE_COLUMN]) > 1.0  # table typo


def test_protocol_registry_and_published_rows():
    assert set(PROTOCOLS) == {"busi", "bus", "glas", "single_domain", "busi_to_bus", "bus_to_busi", "ham10000_nv"}
    for protocol in PROTOCOLS.values():
        for column in protocol.columns:
            assert column.dataset in list_datasets() and column.train_dataset in protocol.train_datasets
        rows = published_rows(protocol)
        for model in ("MatchSeg", "UniverSeg"):
            assert set(rows[model]) >= {column.name for column in protocol.columns}
    single = get_protocol("single_domain")
    assert [(c.name, c.dataset, c.train_dataset, c.test_list) for c in single.columns] == [
        ("BUSI", "busi", "busi", "test"), ("BUS", "bus", "bus", "test"), ("GlaS", "glas", "glas", "test")]
    assert [(c.dataset, c.test_list) for c in get_protocol("busi_to_bus").columns] == [("bus", "all")]
    assert [(c.dataset, c.test_list) for c in get_protocol("bus_to_busi").columns] == [("busi", "all")]
    assert published_rows(get_protocol("bus"))["MatchSeg"] == {"BUS": {"dice": 90.58, "jaccard": 83.23}}
    assert published_rows(get_protocol("bus_to_busi"))["MatchSeg"] == {"BUS_to_BUSI": {"dice": 59.27,
                                                                                       "jaccard": 51.53}}
    assert published_rows(get_protocol("ham10000_nv"))["UniverSeg"][AVERAGE_COLUMN] == {"dice": 77.17}
    with pytest.raises(ValueError, match="unknown protocol 'nope'"):
        get_protocol("nope")
    with pytest.raises(ValueError, match="must name its training data set"):
        Protocol("x", "x", ("busi", "bus"), (Column("A", "bus", "all"),))
    with pytest.raises(ValueError, match="average must be one of"):
        Protocol("x", "x", ("busi",), (Column("A", "bus", "all"),), average="mean")
    with pytest.raises(ValueError, match="not a plain folder name"):
        Protocol("x", "x", ("busi",), (Column("A/B", "bus", "all"),))


def test_checkpoints_are_matched_to_columns_by_training_set():
    busi, bus, glas = (CheckpointInfo(f"{name}.pth", name, "unet") for name in ("busi", "bus", "glas"))
    single = get_protocol("single_domain")
    assert match_checkpoints(single, [glas, busi, bus]) == {"BUSI": busi, "BUS": bus, "GlaS": glas}
    with pytest.raises(ValueError, match="column GlaS of protocol single_domain needs a checkpoint trained on glas"):
        match_checkpoints(single, [busi, bus])
    with pytest.raises(ValueError, match=r"column BUS of protocol single_domain: 2 checkpoints trained on bus "
                                         r"\(bus.pth, other.pth\)"):
        match_checkpoints(single, [busi, bus, glas, CheckpointInfo("other.pth", "bus", "unet")])
    with pytest.raises(CheckpointError, match=r"^bus.pth: trained on bus, but column BUSI->BUS of protocol "
                                              r"busi_to_bus needs a checkpoint trained on busi"):
        match_checkpoints(get_protocol("busi_to_bus"), [bus])
    with pytest.raises(CheckpointError, match="^glas.pth: trained on glas, which no column of protocol busi_to_bus"):
        match_checkpoints(get_protocol("busi_to_bus"), [busi, glas])


# ----------------------------------------------------------------------------------------------------------------
# End to end on phantoms
# ----------------------------------------------------------------------------------------------------------------
def test_busi_to_bus_end_to_end(trained, capsys):
    out = trained["root"] / "busi_to_bus"
    assert protocol_main(["--protocol", "busi_to_bus", "--checkpoint", trained["busi"], "--data_root",
                          str(trained["data"]), "--device", "cpu", "--output_dir", str(out), "--published"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    column = results["columns"]["BUSI_to_BUS"]
    bus_all = read_lines(trained["phantoms"]["bus"]["list_dir"] + "/all.txt")
    assert len(bus_all) == sum(PHANTOM[k] for k in ("num_train", "num_val", "num_test"))
    means = column_means(out / "BUSI_to_BUS")
    assert column["num_cases"] == len(bus_all) == means["rows"] == means["summary"]["num_cases"]
    assert (column["dataset"], column["test_list"], column["train_dataset"]) == ("bus", "all", "busi")
    for key, csv_key in (("dice", "dice"), ("iou", "jaccard"), ("hd95", "hd95")):
        assert column[key] == pytest.approx(means[csv_key], rel=1e-5)  # metrics.csv has 6 digits
        assert column[key] == pytest.approx(means["summary"][f"mean_{csv_key}"])
    assert (results["protocol"], results["arch"], results["label"]) == ("busi_to_bus", "unet", "unet")
    assert results["checkpoints"] == [trained["busi"]] and results["average"] is None
    table = (out / "results.md").read_text()
    row = f"| unet | {100 * column['dice']:.2f} | {100 * column['iou']:.2f} |"
    assert "| Model | BUSI->BUS DSC | BUSI->BUS IoU |" in table and row in table
    assert "| MatchSeg (paper) | 78.07 | 68.86 |" in table and "| UniverSeg (paper) | 51.75 | 40.91 |" in table
    assert table in printed

    # --table: several runs of one protocol, one row each
    other = trained["root"] / "other.json"
    other.write_text(json.dumps({**results, "label": "unet-b"}))
    assert protocol_main(["--table", str(out / "results.json"), str(other)]) == 0
    combined = capsys.readouterr().out
    assert row in combined and row.replace("| unet |", "| unet-b |") in combined and "(paper)" not in combined
    ham = trained["root"] / "ham.json"
    ham.write_text(json.dumps({**results, "protocol": "ham10000_nv"}))
    assert protocol_main(["--table", str(out / "results.json"), str(ham)]) == 2
    assert str(ham) in error_line(capsys)


def test_ham10000_image_weighted_average_and_nothing_half_written(trained, capsys):
    lists = trained["root"] / "ham_lists"
    shutil.copytree(trained["phantoms"]["ham10000"]["list_dir"], lists)
    data_root = trained["root"] / "ham_root"  # the phantom layout, with lists we can edit
    (data_root / "lists").mkdir(parents=True)
    (data_root / "HAM10000").symlink_to(trained["phantoms"]["ham10000"]["root_path"])
    (data_root / "lists" / "lists_HAM10000").symlink_to(lists)
    args = ["--protocol", "ham10000_nv", "--checkpoint", trained["ham10000"], "--data_root", str(data_root),
            "--device", "cpu"]
    default_out = trained["root"] / "run_ham" / "protocol_ham10000_nv"

    # a listed file missing: found before anything is evaluated
    vasc = read_lines(lists / "test_vasc.txt")
    (lists / "test_vasc.txt").write_text("\n".join([*vasc, "ISIC_missing"]) + "\n")
    assert protocol_main(args) == 2
    assert "ISIC_missing" in error_line(capsys) and not default_out.exists()
    # a corrupt file in the last column: the first five were evaluated, then everything is removed again
    corrupt = data_root / "HAM10000" / "ISIC_corrupt.npz"
    corrupt.write_bytes(b"not an npz")
    (lists / "test_vasc.txt").write_text("\n".join([*vasc, "ISIC_corrupt"]) + "\n")
    assert protocol_main(args) == 2
    printed = []
    assert error_line(capsys, printed).startswith(f"error: {corrupt}: cannot read npz file")
    assert "mean DSC" in printed[0] and "test_mel" in printed[0] and not default_out.exists()
    corrupt.unlink()
    (lists / "test_vasc.txt").write_text("\n".join(vasc) + "\n")

    # different image counts per type: MEL also lists the NV training images
    mel = read_lines(lists / "test_mel.txt") + read_lines(lists / "train.txt")
    (lists / "test_mel.txt").write_text("\n".join(mel) + "\n")
    assert protocol_main(args) == 0
    results = json.loads((default_out / "results.json").read_text())
    counts, dice = {}, {}
    for name in HAM_SIZES:
        means = column_means(default_out / name)
        counts[name], dice[name] = means["rows"], means["summary"]["mean_dice"]
        assert results["columns"][name]["num_cases"] == counts[name]
        assert results["columns"][name]["dice"] == pytest.approx(dice[name])
    assert counts["MEL"] == len(mel) == PHANTOM["num_test"] + PHANTOM["num_train"]
    assert counts["AKIEC"] == PHANTOM["num_test"]
    expected = sum(counts[n] * dice[n] for n in HAM_SIZES) / sum(counts.values())
    assert results["average"]["dice"] == pytest.approx(expected)
    assert results["average"]["num_cases"] == sum(counts.values())
    table = (default_out / "results.md").read_text()
    assert "| Model | AKIEC | BCC | BKL | DF | MEL | VASC | Avg |" in table
    assert f"| {100 * results['average']['dice']:.2f} |" in table
    assert results_markdown(get_protocol("ham10000_nv"), [results], published=True).count("(paper)") == 10
    capsys.readouterr()


def test_bad_inputs_one_error_line_exit_2_nothing_written(trained, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--data_root", str(trained["data"]), "--device", "cpu"]
    missing = tmp_path / "missing.pth"
    assert protocol_main(["--protocol", "busi_to_bus", "--checkpoint", str(missing), "--output_dir", str(out),
                          *base]) == 2
    assert error_line(capsys) == f"error: {missing}: checkpoint file not found"
    assert not out.exists() and not (tmp_path / "protocol_busi_to_bus").exists()

    # trained on the wrong data set: the error names the checkpoint, its set and the column
    assert protocol_main(["--protocol", "bus_to_busi", "--checkpoint", trained["busi"], "--output_dir", str(out),
                          *base]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {trained['busi']}: trained on busi, but column BUS->BUSI")
    assert "needs a checkpoint trained on bus" in line and not out.exists()

    # a checkpoint without the training options (not written by train.py)
    bare = tmp_path / "bare.pth"
    save_checkpoint(bare, model_checkpoint(create_model("unet", pretrained=False, num_classes=2, in_chans=3,
                                                        **{**TINY_MODEL_OPTIONS["unet"], "img_size": SIZE})))
    assert protocol_main(["--protocol", "busi", "--checkpoint", str(bare), *base]) == 2
    assert "records no training data set" in error_line(capsys)

    # data prepared without the all list
    empty = tmp_path / "empty"
    assert protocol_main(["--protocol", "busi_to_bus", "--checkpoint", trained["busi"], "--output_dir", str(out),
                          "--data_root", str(empty), "--device", "cpu"]) == 2
    assert "all.txt: list of column BUSI->BUS does not exist" in error_line(capsys) and not out.exists()

    # options the protocol sets itself cannot be forwarded
    with pytest.raises(SystemExit) as excinfo:
        protocol_main(["--protocol", "busi", "--checkpoint", trained["busi"], "--", "--test_list", "val"])
    assert excinfo.value.code == 2
    with pytest.raises(SystemExit):
        protocol_main(["--table", "a.json", "--checkpoint", trained["busi"]])
    capsys.readouterr()


def test_the_results_page_puts_the_papers_rows_beside_ours_with_the_gaps(trained, capsys):
    from urllib.parse import unquote

    from tests.utils.test_report import Page

    out = trained["root"] / "busi_to_bus_page"
    assert protocol_main(["--protocol", "busi_to_bus", "--checkpoint", trained["busi"], "--data_root",
                          str(trained["data"]), "--device", "cpu", "--output_dir", str(out)]) == 0
    capsys.readouterr()
    results = json.loads((out / "results.json").read_text())
    column = results["columns"]["BUSI_to_BUS"]
    page = Page((out / "results.html").read_text(encoding="utf-8"))

    row = page.tables["columns"]["rows"][0]  # what the column tested, our numbers, its test page
    assert [cell["text"] for cell in row[:4]] == ["BUSI->BUS", "bus / all", "busi", str(column["num_cases"])]
    assert float(row[4]["attrs"]["data-value"]) == 100 * column["dice"]
    assert float(row[5]["attrs"]["data-value"]) == 100 * column["iou"]
    assert float(row[6]["attrs"]["data-value"]) == column["hd95"]
    target = (out / unquote(row[7]["links"][0])).resolve()
    assert target == (out / "BUSI_to_BUS" / "report.html").resolve() and target.is_file()

    paper = page.tables["paper"]
    assert [cell["text"] for cell in paper["head"]] == ["Model", "BUSI->BUS DSC", "BUSI->BUS IoU"]
    ours = {"dice": 100 * column["dice"], "jaccard": 100 * column["iou"]}
    assert paper["rows"][0][0]["text"] == "unet" and paper["row_attrs"][0].get("class") == "ours"
    assert [float(cell["attrs"]["data-value"]) for cell in paper["rows"][0][1:]] == list(ours.values())
    published = published_rows(get_protocol("busi_to_bus"))
    assert [row[0]["text"] for row in paper["rows"][1:]] == [f"{model} (paper)" for model in published]
    for row, attrs, (model, cells) in zip(paper["rows"][1:], paper["row_attrs"][1:], published.items()):
        assert (attrs.get("class") == "same") == (model == "UNet")  # the published row of our model
        for cell, metric in zip(row[1:], ("dice", "jaccard")):
            value, gap = cells["BUSI_to_BUS"][metric], ours[metric] - cells["BUSI_to_BUS"][metric]
            assert float(cell["attrs"]["data-value"]) == value and cell["text"] == f"{value:.2f}{gap:+.2f}"
            (badge,) = cell["spans"]
            assert float(badge["data-gap"]) == pytest.approx(gap)
            assert badge["style"].startswith("background: rgba(26, 127, 55" if gap >= 0 else
                                             "background: rgba(207, 34, 46")
    for href in page.links:
        assert (out / unquote(href)).is_file(), href

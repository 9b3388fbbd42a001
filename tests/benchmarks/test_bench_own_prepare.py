"""benchmarks/bench_own_prepare.py on a tiny phantom: the report counts the cases (training + labelled test) and
gives one rate per worker count, written as JSON."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_own_prepare  # noqa: E402


def test_report(tmp_path):
    path = tmp_path / "report.json"
    report = bench_own_prepare.main(["--format", "nnunet", "--count", "2", "--workers", "1", "--repeats", "1",
                                     "--json", str(path)])
    assert json.loads(path.read_text()) == report
    assert report["config"]["cases"] == 4  # 2 imagesTr + the phantom's 2 labelled imagesTs
    timing = report["workers_1"]
    assert abs(timing["cases_per_s"] * timing["best_s"] - 4) < 1e-9

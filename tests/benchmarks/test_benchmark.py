"""benchmarks/bench_model.py on tiny configurations: the JSON report of issue 4 (keys, ratios computed from the
medians it reports, phases of the volume workload), written atomically, for each workload."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_model  # noqa: E402

TINY_MODEL = ["--scale", "pico", "--img_size", "64", "--img_size_s2", "64", "--batch", "1"]
ONCE = ["--repeats", "1", "--warmup", "0", "--device", "cpu", "--threads", "1"]
CASES = {
    "model": ["--what", "model", *TINY_MODEL],
    "dmwla": ["--what", "dmwla", "--batch", "1"],
    "volume": ["--what", "volume", *TINY_MODEL, "--slices", "3", "--slice_size", "40", "--infer_batch", "2"],
}


@pytest.mark.parametrize("what", CASES)
def test_report(what, tmp_path):
    path = tmp_path / "out" / "report.json"
    returned = bench_model.main([*CASES[what], *ONCE, "--json", str(path)])
    report = json.loads(path.read_text())
    assert report == returned
    assert not list(path.parent.glob("*.tmp"))
    assert report["config"]["what"] == what and report["config"]["device"] == "cpu"

    timed_keys = {"infer_s"} if what == "volume" else {"train_step_s", "infer_s"}
    for impl in ("fast", "reference"):
        result = report[impl]
        assert result["peak_mem_mb"] > 0
        assert all(result[key] > 0 for key in timed_keys)
        if what == "volume":
            assert result["train_step_s"] is None
            # the two phases are parts of the timed whole
            assert 0 < result["network_s"] and 0 <= result["metrics_s"]
            assert result["network_s"] + result["metrics_s"] <= result["infer_s"]
    fast, reference = report["fast"], report["reference"]
    phases = {"network_s", "metrics_s"} if what == "volume" else set()
    assert set(report["speedup"]) == {key.removesuffix("_s") for key in timed_keys | phases}
    for key, ratio in report["speedup"].items():
        assert ratio == pytest.approx(reference[key + "_s"] / fast[key + "_s"], rel=1e-12)
    assert report["memory_ratio"] == pytest.approx(fast["peak_mem_mb"] / reference["peak_mem_mb"], rel=1e-12)


def test_single_implementation_has_no_ratios():
    report = bench_model.main([*CASES["dmwla"], *ONCE, "--impl", "fast"])
    assert set(report) == {"config", "fast"}


@pytest.mark.parametrize("argv", [["--what", "dmwla", "--grad_checkpointing"], ["--what", "volume", "--compile"]])
def test_options_of_another_workload_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_model.main([*argv, *ONCE])
    assert exit_info.value.code == 2 and argv[-1] in capsys.readouterr().err

"""The data side's old module paths (datasets/moved.py): an old command still runs, with one note naming the new one,
and writes exactly what the new command writes; importing an old module fails with one line naming where it went."""
from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from datasets.io.pairs import main as pairs_main
from datasets.moved import COMMANDS, MOVED, run_moved
from datasets.phantoms.busi import write_busi_download, write_busi_phantom
from datasets.phantoms.cli import main as phantoms_main
from datasets.prepare.busi import main as prepare_busi_main

REPO = Path(__file__).resolve().parents[2]
PHANTOM = ["--dataset", "busi", "--num_train", "3", "--num_val", "1", "--num_test", "1", "--size", "24", "--seed", "4"]


def files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_old_commands_run_the_new_modules_and_write_the_same_files(tmp_path, capsys):
    official = tmp_path / "official"
    write_busi_download(official, num_benign=4, num_malignant=4, num_normal=1, height=20, width=24, seed=1)
    pool = write_busi_phantom(tmp_path / "pool" / "BUSI", tmp_path / "pool" / "lists", num_train=3, num_val=1,
                              num_test=1, size=24, seed=2)
    prepare = ["--src", str(official), "--size", "16"]
    pairs = ["--dataset", "busi", "--root", pool["root_path"], "--list_dir", pool["list_dir"], "--split", "train"]
    old = {  # the three old command lines users typed, run as commands (concurrently: each loads the package)
        "datasets.phantom": [*PHANTOM, "--out", str(tmp_path / "old_phantom")],
        "datasets.prepare_busi": [*prepare, "--out", str(tmp_path / "old_prep"), "--list_dir",
                                  str(tmp_path / "old_prep_lists")],
        "datasets.pair_folder": [*pairs, "--out", str(tmp_path / "old_pairs")],
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {name: subprocess.Popen([sys.executable, "-m", name, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True) for name, args in old.items()}
    assert phantoms_main([*PHANTOM, "--out", str(tmp_path / "new_phantom")]) == 0
    assert prepare_busi_main([*prepare, "--out", str(tmp_path / "new_prep"), "--list_dir",
                              str(tmp_path / "new_prep_lists")]) == 0
    assert pairs_main([*pairs, "--out", str(tmp_path / "new_pairs")]) == 0
    for name, process in runs.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, (name, err)
        assert err.strip().splitlines() == [f"note: `python -m {name}` is now `python -m {COMMANDS[name]}`"], err
        assert out.strip(), name  # the new command's report
    for what in ("phantom", "prep", "prep_lists", "pairs"):
        new, old_files = files(tmp_path / f"new_{what}"), files(tmp_path / f"old_{what}")
        assert new and new == old_files, what


def test_every_old_command_names_and_runs_its_new_module(monkeypatch, capsys):
    ran = []
    monkeypatch.setattr("runpy.run_module", lambda name, **kwargs: ran.append((name, kwargs)))
    for old, new in COMMANDS.items():
        assert importlib.util.find_spec(new) is not None, new
        code = importlib.util.find_spec(old).loader.get_code(old)  # what `python -m OLD` executes as __main__
        exec(code, {"__name__": "__main__"})
        assert ran[-1] == (new, {"run_name": "__main__", "alter_sys": True})
        assert capsys.readouterr().err == f"note: `python -m {old}` is now `python -m {new}`\n"
    run_moved("datasets.prepare_acdc")
    assert ran[-1][0] == "datasets.prepare.acdc"


@pytest.mark.parametrize("old", sorted(MOVED))
def test_importing_an_old_module_is_one_line_naming_the_new_one(old):
    with pytest.raises(ImportError) as caught:
        importlib.import_module(old)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(old) and MOVED[old] in message
    for target in MOVED[old].replace(",", " ").split():  # the new modules named exist
        if target.startswith("datasets."):
            assert importlib.util.find_spec(target) is not None, target


def test_from_package_import_and_running_a_moved_library_module_fail_the_same_way():
    with pytest.raises(ImportError, match="datasets.common was split into datasets.errors"):
        from datasets import common  # noqa: F401
    code = importlib.util.find_spec("datasets.dicom").loader.get_code("datasets.dicom")  # python -m datasets.dicom
    with pytest.raises(SystemExit, match="^error: datasets.dicom moved to datasets.io.dicom$"):
        exec(code, {"__name__": "__main__"})

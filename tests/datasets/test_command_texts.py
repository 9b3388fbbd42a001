"""What the data commands say about themselves: usage lines name the command one types, --help states the defaults
the code uses (the colour preparations' split seed, the phantoms' --num_val), and the Synapse preparation says how
it relabels and which of TransUNet's 12 test cases a download lacks."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from datasets.io import pairs
from datasets.io.dicom_series import dicom_series_ids
from datasets.phantoms.cli import main as phantom_main
from datasets.prepare import busi, isic2018
from datasets.prepare.synapse import main as prepare_synapse
from datasets.synapse import SYNAPSE_TEST_CASES


def help_text(main, capsys) -> str:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_usage_lines_name_the_module_one_types(capsys):
    assert help_text(pairs.main, capsys).startswith("usage: python -m datasets.io.pairs ")
    assert help_text(phantom_main, capsys).startswith("usage: python -m datasets.phantoms ")


def test_help_states_the_defaults_the_code_uses(capsys):
    seeds = {}
    for module in (busi, isic2018):  # what each preparation passes on as its seed when none is given
        text = help_text(module.main, capsys)
        seeds[module.__name__] = text.split("before splitting (default: ", 1)[1].split(")", 1)[0]
    assert seeds == {"datasets.prepare.busi": str(busi.DEFAULT_SEED), "datasets.prepare.isic2018":
                     "sorted names, not permuted"}
    assert "--num_valid NUM_VALID, --num_val NUM_VALID" in help_text(phantom_main, capsys)


def test_synapse_preparation_says_how_it_relabels_and_which_test_cases_are_missing(tmp_path, capsys):
    raw = tmp_path / "RawData" / "Training"
    (raw / "img").mkdir(parents=True)
    (raw / "label").mkdir()
    label = np.zeros((8, 8, 2), dtype=np.uint8)
    label[2:5, 2:5, :], label[5:7, 5:7, :] = 8, 5  # BTCV aorta (-> 1) and esophagus (-> background)
    for number in (SYNAPSE_TEST_CASES[0], 5):  # one test case of the 12, one training case
        image = nib.Nifti1Image(np.full((8, 8, 2), 40.0, np.float32), np.eye(4))
        nib.save(image, raw / "img" / f"img{number:04d}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), raw / "label" / f"label{number:04d}.nii.gz")
    assert prepare_synapse(["--raw_dir", str(tmp_path / "RawData"), "--out_dir", str(tmp_path / "out"),
                            "--list_dir", str(tmp_path / "lists")]) == 0
    out, err = capsys.readouterr()
    assert "8 aorta -> 1" in out and "5 esophagus" in out.split("background: ", 1)[1]
    missing = len(SYNAPSE_TEST_CASES) - 1
    assert f"warning: {missing} of the 12 test cases are not in" in err and "case0002" in err


def test_a_folder_without_dicom_files_is_scanned_quietly(tmp_path, capfd):
    """predict.py scans every input folder for a DICOM series; ITK's 'No Series were found' (on stderr, from C++)
    for a folder of NIfTI files is nothing a user can act on."""
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), np.eye(4)), tmp_path / "scan.nii.gz")
    assert dicom_series_ids(tmp_path) == [] and dicom_series_ids(tmp_path) == []
    assert "No Series" not in capfd.readouterr().err

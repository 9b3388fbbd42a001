"""Evaluate a checkpoint of any registered model on any registered data set: `python test.py --dataset acdc --help`.

The model is the one the checkpoint names, and what its run recorded (data set, data folders, list folder, classes) is
the default: `python test.py --checkpoint runs/x/best_val.pth`; an option given overrides it. `test_<dataset>.py` are
this script with the data set fixed.
"""
import sys

from utils.cli import build_test_parser, run_cli
from utils.evaluator import evaluate

if __name__ == "__main__":
    sys.exit(run_cli(evaluate, build_test_parser().parse_config()))

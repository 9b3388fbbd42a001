"""Evaluate a checkpoint of any registered model on any registered data set: `python test.py --dataset acdc --help`.

The model is the one the checkpoint names; `test_<dataset>.py` are this script with the data set fixed.
"""
import sys

from utils.cli import build_test_parser, run_cli
from utils.evaluator import evaluate

if __name__ == "__main__":
    sys.exit(run_cli(evaluate, build_test_parser().parse_config()))

"""Evaluate a Sim-MPNet checkpoint on SegPC-2021 multiple-myeloma cells: `python test_segpc2021.py --help`."""
import sys

from utils.cli import build_test_parser, run_cli
from utils.evaluator import evaluate

if __name__ == "__main__":
    sys.exit(run_cli(evaluate, build_test_parser("segpc2021").parse_config()))

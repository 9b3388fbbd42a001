"""Evaluate a Sim-MPNet checkpoint on ACDC cardiac MRI: `python test_acdc.py --help`."""
import sys

from utils.cli import build_test_parser, run_cli
from utils.evaluator import evaluate

if __name__ == "__main__":
    sys.exit(run_cli(evaluate, build_test_parser("acdc").parse_config()))

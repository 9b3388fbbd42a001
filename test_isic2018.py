"""Evaluate a Sim-MPNet checkpoint on ISIC-2018 skin lesions (dermoscopy): `python test_isic2018.py --help`."""
import sys

from utils.cli import build_test_parser, run_cli
from utils.evaluator import evaluate

if __name__ == "__main__":
    sys.exit(run_cli(evaluate, build_test_parser("isic2018").parse_config()))

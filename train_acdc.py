"""Train Sim-MPNet on ACDC cardiac MRI: `python train_acdc.py --help`."""
import sys

from utils.cli import build_train_parser, run_cli
from utils.trainer import train

if __name__ == "__main__":
    sys.exit(run_cli(train, build_train_parser("acdc").parse_config()))

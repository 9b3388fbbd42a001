"""Train Sim-MPNet on SegPC-2021 multiple-myeloma cells (microscopy): `python train_segpc2021.py --help`."""
import sys

from utils.cli import build_train_parser, run_cli
from utils.trainer import train

if __name__ == "__main__":
    sys.exit(run_cli(train, build_train_parser("segpc2021").parse_config()))

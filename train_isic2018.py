"""Train Sim-MPNet on ISIC-2018 skin lesions (dermoscopy): `python train_isic2018.py --help`."""
import sys

from utils.cli import build_train_parser, run_cli
from utils.trainer import train

if __name__ == "__main__":
    sys.exit(run_cli(train, build_train_parser("isic2018").parse_config()))

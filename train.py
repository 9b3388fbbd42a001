"""Train any registered model on any registered data set: `python train.py --model unet --dataset synapse --help`.

`train_<dataset>.py` are this script with the data set fixed (and Sim-MPNet as the default model).
"""
import sys

from utils.cli import build_train_parser, run_cli
from utils.trainer import train

if __name__ == "__main__":
    sys.exit(run_cli(train, build_train_parser().parse_config()))

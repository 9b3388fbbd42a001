"""Train Sim-MPNet on Synapse multi-organ CT: `python train_synapse.py --help`."""
import sys

from utils.cli import build_train_parser, run_cli
from utils.trainer import train

if __name__ == "__main__":
    sys.exit(run_cli(train, build_train_parser("synapse").parse_config()))

"""Re-estimate a checkpoint's BatchNorm running statistics on its training data (PreciseBN), weights and memory
unchanged: `python recalibrate.py --checkpoint runs/synapse/last.pth` writes runs/synapse/last_recalibrated.pth.

Any registered model with BatchNorm layers; see utils/recalibration.py and docs/training.md.
"""
import sys

from utils.recalibration import main

if __name__ == "__main__":
    sys.exit(main())

"""Run one of MatchSeg's evaluation protocols and write a paper-style results table: `python protocol.py --help`.

    python protocol.py --protocol busi_to_bus --checkpoint runs/busi_unet_128/last.pth --published
    python protocol.py --table runA/protocol_busi_to_bus/results.json runB/protocol_busi_to_bus/results.json

Protocols are declared in datasets/protocols.py; see the package utils/protocol/.
"""
import sys

from utils.protocol import main

if __name__ == "__main__":
    sys.exit(main())

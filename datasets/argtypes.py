"""argparse types shared by every command line of the project: the preparations here and the engine's scripts
(``utils.cli``, ``predict.py``), so that a bad count reads the same everywhere."""
from __future__ import annotations

import argparse

__all__ = ["positive_int", "non_negative_int"]


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value

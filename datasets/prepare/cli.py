"""The command line the colour sets' preparations share (``python -m datasets.prepare.<set> --src ... --out ...``)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence

from ..argtypes import positive_int
from ..errors import DataError

__all__ = ["add_preparation_arguments", "run_preparation"]


def add_preparation_arguments(
    parser: argparse.ArgumentParser, src_help: str, out: str, out_help: str, list_dir: str, size: int
) -> None:
    """The options the colour preparations share: --src, --out, --list_dir, --size, --seed."""
    parser.add_argument("--src", required=True, help=src_help)
    parser.add_argument("--out", default=out, help=out_help)
    parser.add_argument("--list_dir", default=list_dir, help="writes LIST_DIR/{train,val,test}.txt")
    parser.add_argument("--size", type=positive_int, default=size, help="output height and width")
    parser.add_argument("--seed", type=int, default=None,
                        help="permute the images with this seed before splitting (default: sorted names)")


def run_preparation(prepare: Callable[[], Mapping[str, Sequence[str]]], out: str, list_dir: str) -> int:
    """Run ``prepare()``; print its DataError (exit status 1) or a summary of the entries (0)."""
    try:
        entries = prepare()
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("wrote " + ", ".join(f"{len(v)} {k}" for k, v in entries.items()) + f" items to {out}, lists in {list_dir}")
    return 0

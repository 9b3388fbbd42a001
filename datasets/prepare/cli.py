"""The command line the preparations share (``python -m datasets.prepare.<set> ...``): the parser, the colour sets'
options (``--src ... --out ...``) and the run (one error line or a summary)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

from ..argtypes import positive_int
from ..errors import DataError
from ..next_steps import next_steps_text, prepared_folders

__all__ = ["add_preparation_arguments", "image_set_main", "preparation_parser", "run_preparation"]


def preparation_parser(module_file: str, description: str) -> argparse.ArgumentParser:
    """The parser of ``datasets/prepare/<set>.py``; its usage line names the command one types (argparse would name
    the file, e.g. ``usage: synapse.py``)."""
    return argparse.ArgumentParser(prog=f"python -m {__package__}.{Path(module_file).stem}", description=description)


def add_preparation_arguments(
    parser: argparse.ArgumentParser, src_help: str, out: str, out_help: str, list_dir: str, size: int,
    seed: int | None = None,
) -> None:
    """The options the colour preparations share: --src, --out, --list_dir, --size, --seed (default ``seed``;
    None: no permutation, the sorted names are split)."""
    parser.add_argument("--src", required=True, help=src_help)
    parser.add_argument("--out", default=out, help=out_help)
    parser.add_argument("--list_dir", default=list_dir, help="writes LIST_DIR/{train,val,test}.txt")
    parser.add_argument("--size", type=positive_int, default=size, help="output height and width")
    parser.add_argument("--seed", type=int, default=seed,
                        help="permute the images with this seed before splitting (default: "
                             + ("sorted names, not permuted)" if seed is None else f"{seed})"))


def run_preparation(prepare: Callable[[], Mapping[str, Sequence[str]]], out: str, list_dir: str,
                    dataset: str | None = None) -> int:
    """Run ``prepare()``; print its DataError (exit status 1) or a summary of the entries and, for a registered
    ``dataset``, the train and test commands on what was written (0)."""
    try:
        entries = prepare()
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("wrote " + ", ".join(f"{len(v)} {k}" for k, v in entries.items()) + f" items to {out}, lists in {list_dir}")
    if dataset is not None:
        print(next_steps_text(dataset, *prepared_folders(dataset, out), list_dir))
    return 0


def image_set_main(
    module_file: str, description: str, prepare: Callable[..., Mapping[str, Sequence[str]]], src_help: str, out: str,
    out_help: str, list_dir: str, size: int, seed: int | None = None,
) -> Callable[[Sequence[str] | None], int]:
    """The ``main(argv) -> exit status`` of a colour set whose preparation takes nothing but the shared options:
    ``prepare(src, out, list_dir, size, seed)``."""
    def main(argv: Sequence[str] | None = None) -> int:
        parser = preparation_parser(module_file, description)
        add_preparation_arguments(parser, src_help, out, out_help, list_dir, size, seed)
        args = parser.parse_args(argv)
        return run_preparation(partial(prepare, args.src, args.out, args.list_dir, args.size, args.seed),
                               args.out, args.list_dir, Path(module_file).stem)

    return main

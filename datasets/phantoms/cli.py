"""The generic command line of the phantoms, ``python -m datasets.phantoms`` (see the package's docstring).

Each set's generator is reached only through the set's :class:`~datasets.registry.PhantomSpec`, so a new set needs
no change here.

    python -m datasets.phantoms --dataset synapse --out data/phantom    # data/phantom/Synapse, lists/lists_Synapse
    python -m datasets.phantoms --dataset isic2018 --out data/phantom   # data/phantom/ISIC2018, lists/lists_ISIC2018
    python -m datasets.phantoms --dataset segpc2021 --out data/phantom --official   # fake download to prepare
    python -m datasets.phantoms --format nnunet --out data/raw   # a raw own data set (nnunet, msd, folder) to prepare
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import get_dataset, list_datasets  # importing the package registers the sets
from ..next_steps import next_steps_text
from ..registry import PhantomSpec
from .own import RAW_FORMAT_OPTIONS, RAW_FORMATS, write_raw_phantom

# Count/size options (None: the writer's default) and what they count.
OPTION_HELP = {
    "size": "slice or image height and width",
    "depth": "slices per volume",
    "num_train": "training cases (volumes, patients, images or fields: the set's unit)",
    "num_test": "test cases",
    "num_valid": "validation cases",
}
# Writer keywords an option may stand for besides its own name (the colour sets call their validation split val).
KEYWORD_ALIASES = {"num_valid": ("num_val",)}


def phantom_sets() -> list[str]:
    """Registered data sets that have a phantom writer, sorted."""
    return [name for name in list_datasets() if get_dataset(name).phantom is not None]


def writer_keyword(phantom: PhantomSpec, option: str) -> str | None:
    """The writer keyword that ``--option`` sets, or None when this writer does not take it."""
    for keyword in (option, *KEYWORD_ALIASES.get(option, ())):
        if keyword in phantom.options:
            return keyword
    return None


def sets_taking(option: str) -> list[str]:
    """Phantom sets whose writer takes ``--option``."""
    return [name for name in phantom_sets() if writer_keyword(get_dataset(name).phantom, option)]


def sets_with_download() -> list[str]:
    """Phantom sets that can also write a fake official download (``--official``)."""
    return [name for name in phantom_sets() if get_dataset(name).phantom.write_download is not None]


def join_names(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(filter(None, (", ".join(names[:-1]), names[-1]))) if names else "none"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    names = phantom_sets()
    titles = "; ".join(f"{name}: {get_dataset(name).title}" for name in names)
    parser = argparse.ArgumentParser(prog="python -m datasets.phantoms",
                                     description=f"Write a deterministic synthetic data set ({titles}).")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--dataset", choices=names)
    which.add_argument("--format", choices=sorted(RAW_FORMATS),
                       help="write a tiny raw data set in this format instead (the input of python -m "
                            "datasets.prepare.own; --num_train, --num_test (nnunet), --size (folder), --seed)")
    folders = "|".join(get_dataset(name).phantom.dir_name for name in names)
    parser.add_argument("--out", required=True, help=f"writes OUT/<{folders}>/... and OUT/lists/lists_<name>/")
    parser.add_argument("--seed", type=int, default=0)
    for option, what in OPTION_HELP.items():
        aliases = [f"--{alias}" for alias in KEYWORD_ALIASES.get(option, ())]  # the writers' own spelling works too
        parser.add_argument(f"--{option}", *aliases, dest=option, type=int, default=None,
                            help=f"{what} ({', '.join(sets_taking(option))})")
    parser.add_argument("--official", action="store_true",
                        help="write a fake official download to OUT/<name>_official instead, the input of the set's "
                             f"preparation script (only --seed; {', '.join(sets_with_download())})")
    return parser.parse_args(argv)


def fail(message: str) -> int:
    """Report an option the chosen set does not take; exit status 2, as argparse uses for usage errors."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def raw_main(args: argparse.Namespace) -> int:
    """``--format``: write a raw own data set (datasets/phantoms/own.py)."""
    given = {option: getattr(args, option) for option in OPTION_HELP if getattr(args, option) is not None}
    taken = RAW_FORMAT_OPTIONS[args.format]
    refused = [option for option in given if option not in taken]
    if refused or args.official:
        return fail(f"--format {args.format} takes {', '.join(f'--{o}' for o in taken)} and --seed, not "
                    f"--{(refused or ['official'])[0]}")
    root = write_raw_phantom(args.format, args.out, seed=args.seed, **given)
    print(f"wrote a raw {args.format} data set to {root}; prepare it with: python -m datasets.prepare.own "
          f"--src {root} --out data/{os.path.basename(root).lower()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 for an option the chosen set does not take)."""
    args = parse_args(argv)
    if args.format:
        return raw_main(args)
    spec = get_dataset(args.dataset)
    phantom = spec.phantom
    given = {option: getattr(args, option) for option in OPTION_HELP if getattr(args, option) is not None}
    if args.official and phantom.write_download is None:
        return fail(f"--official applies to {join_names(sets_with_download())} only")
    refused = [option for option in given if writer_keyword(phantom, option) is None]
    if refused:  # sets named by their data folders (Synapse, ACDC, ...)
        folders = [get_dataset(name).phantom.dir_name for name in sets_taking(refused[0])]
        taken = ", ".join(f"--{option}" for option in OPTION_HELP if writer_keyword(phantom, option))
        return fail(f"--{refused[0]} applies to {join_names(folders)} only ({phantom.dir_name} takes {taken})")
    if args.official:
        if given:
            return fail("--official takes only --seed")
        src = os.path.join(args.out, f"{phantom.dir_name}_official")
        phantom.write_download(src, seed=args.seed)
        print(f"wrote a fake official {phantom.dir_name} download to {src}")
        return 0
    options = {writer_keyword(phantom, option): value for option, value in given.items()}
    result = phantom.write(os.path.join(args.out, phantom.dir_name),
                           os.path.join(args.out, "lists", phantom.list_dir_name), seed=args.seed, **options)
    entries = result.get("entries") or {}
    counts = ", ".join(f"{len(names)} {split}" for split, names in entries.items()) or "the"
    folders = dict.fromkeys((result["root_path"], result["volume_path"]))  # one folder, or training and volumes
    print(f"wrote {counts} items to {' and '.join(folders)}, lists in {result['list_dir']}")
    print(next_steps_text(spec.name, result["root_path"], result["volume_path"], result["list_dir"]))
    return 0


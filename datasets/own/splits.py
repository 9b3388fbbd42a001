"""The splits of an own data set: nnU-Net's ``splits_final.json`` (fold N) when the raw set has one, else seeded
blocks of the sorted case names (:func:`datasets.prepare.splits.split_in_blocks`); a labelled ``imagesTs`` is the
test split."""
from __future__ import annotations

from collections.abc import Sequence

from ..errors import DataError
from ..prepare.splits import split_in_blocks
from .formats import RawSet, read_json

__all__ = ["OWN_SPLITS", "DEFAULT_FRACTIONS", "DEFAULT_SEED", "choose_splits", "read_fold"]

OWN_SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)
DEFAULT_SEED = 1234


def read_fold(path: str, fold: int, pool: Sequence[str]) -> tuple[list[str], list[str]]:
    """(train, val) case names of ``fold`` in an nnU-Net splits_final.json ([{train: [...], val: [...]}, ...])."""
    folds = read_json(path)
    if not isinstance(folds, list) or not all(isinstance(f, dict) and "train" in f and "val" in f for f in folds):
        raise DataError(path, "expected a list of folds, each {\"train\": [...], \"val\": [...]}")
    if not 0 <= fold < len(folds):
        raise DataError(path, f"--fold {fold}: the file holds folds 0..{len(folds) - 1}")
    train, val = [str(n) for n in folds[fold]["train"]], [str(n) for n in folds[fold]["val"]]
    unknown = sorted((set(train) | set(val)) - set(pool))
    if unknown:
        raise DataError(path, f"fold {fold} names case {unknown[0]!r}, not in imagesTr ({len(unknown)} unknown)")
    both = sorted(set(train) & set(val))
    if both:
        raise DataError(path, f"fold {fold}: case {both[0]!r} is in both train and val")
    return sorted(train), sorted(val)


def choose_splits(raw: RawSet, fold: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                  seed: int = DEFAULT_SEED) -> tuple[dict[str, list[str]], str]:
    """({train, val, test: case names}, how they were chosen, in words)."""
    pool = sorted(case.name for case in raw.cases if case.subset == "Tr")
    tests = sorted(case.name for case in raw.cases if case.subset == "Ts")
    clash = sorted(set(pool) & set(tests))
    if clash:
        raise DataError(raw.root, f"case {clash[0]!r} is in both imagesTr and imagesTs")
    test_words = "labelled imagesTs" if tests else None
    if raw.splits_file:
        train, val = read_fold(raw.splits_file, fold, pool)
        words = f"{raw.splits_file} fold {fold}"
        unused = len(pool) - len(train) - len(val)
        if unused:
            words += f" ({unused} imagesTr case(s) in neither its train nor its val: unused)"
        if not tests:
            tests, test_words = list(val), "the fold's val cases (no labelled imagesTs)"
        return {"train": train, "val": val, "test": tests}, f"train/val: {words}; test: {test_words}"
    fractions = [float(f) for f in fractions]
    try:
        if tests:
            kept = fractions[:2] if fractions[1] > 0 else fractions[:1]
            names = OWN_SPLITS[:len(kept)]
            blocks = split_in_blocks(pool, [f / sum(kept) for f in kept], names, seed, what="cases")
        elif fractions[1] > 0:
            blocks = split_in_blocks(pool, fractions, OWN_SPLITS, seed, what="cases")
        else:
            blocks = split_in_blocks(pool, [fractions[0], fractions[2]], ("train", "test"), seed, what="cases")
    except ValueError as exc:
        raise DataError(raw.root, f"cannot split {len(pool)} cases: {exc}") from exc
    splits = {"train": blocks["train"], "val": blocks.get("val", []), "test": tests or blocks["test"]}
    words = f"seeded blocks (fractions {'/'.join(f'{f:g}' for f in fractions)}, seed {seed})"
    return splits, words + (f"; test: {test_words}" if test_words else "")

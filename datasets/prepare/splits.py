"""How the preparations split a download: contiguous blocks of the sorted names, optionally permuted by a seed
first, so that a split is a function of the file names (and the seed) alone."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..rgb import RGB_SPLITS

__all__ = ["split_in_blocks", "split_names"]


def split_in_blocks(items: Sequence[Any], fractions: Sequence[float], splits: Sequence[str], seed: int | None,
                    what: str = "items") -> dict[str, list[Any]]:
    """Contiguous blocks of the sorted ``items``, one per split, each returned sorted.

    Sizes: every split after the first gets round(fraction * N) items, at least 1; the first split gets the rest.
    ``seed=None`` keeps the sorted order; ``seed=N`` permutes the sorted items with ``np.random.default_rng(N)`` first.
    Raises ValueError (naming ``what``) for bad fractions, repeated items, or too few items.
    """
    if len(fractions) != len(splits) or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be {len(splits)} non-negative numbers summing to 1, got {list(fractions)}")
    ordered = sorted(items)
    count = len(ordered)
    if len(set(ordered)) != count:
        raise ValueError(f"{what} must be unique")
    if count < len(splits):
        raise ValueError(f"need at least {len(splits)} {what} to split, got {count}")
    sizes = [max(1, round(fraction * count)) for fraction in fractions[1:]]
    first = count - sum(sizes)
    if first < 1:
        raise ValueError(f"{count} {what} leave none for {splits[0]} with fractions {list(fractions)}")
    if seed is not None:
        ordered = [ordered[i] for i in np.random.default_rng(seed).permutation(count)]
    bounds = np.cumsum([0, first, *sizes])
    return {split: sorted(ordered[bounds[i]:bounds[i + 1]]) for i, split in enumerate(splits)}


def split_names(
    names: Sequence[str], fractions: Sequence[float], seed: int | None = None
) -> dict[str, list[str]]:
    """Train/val/test blocks of ``names`` (:func:`split_in_blocks`): val = round(f_val * N),
    test = round(f_test * N) (at least 1 each), train = the rest. ``seed=None`` keeps the sorted order (the
    reference scripts slice their file listing); ``seed=N`` permutes the sorted names first."""
    return split_in_blocks(names, fractions, RGB_SPLITS, seed, what="names")

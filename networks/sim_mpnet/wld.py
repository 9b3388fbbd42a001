"""W-LD: the K of the memory update follows the change of the training loss."""
from __future__ import annotations

import math


def next_memory_k(previous_loss: float, loss: float, pool_size: int) -> int:
    """K = int((0.5 - 0.5 * (previous_loss - loss)) * M); a value outside [M/4, 3M/4] falls back to M/2.

    A falling loss (previous > current) lowers K (fewer columns replaced), a rising loss raises it.
    """
    if not (math.isfinite(previous_loss) and math.isfinite(loss)):
        return pool_size // 2  # a diverged step carries no signal about the trend
    k = int((0.5 - 0.5 * (previous_loss - loss)) * pool_size)
    if k < pool_size / 4 or k > 3 * pool_size / 4:
        return pool_size // 2
    return k

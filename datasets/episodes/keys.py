"""The names an episode's entries go by, shared by the data side that fills them (:mod:`.support_sets`) and the
models that read them (``networks.matchseg``), so that both spell them once."""
from __future__ import annotations

__all__ = ["SUPPORT_SET", "SUPPORT_IMAGES", "SUPPORT_LABELS"]

SUPPORT_SET = "support_set"  # the batch context: k labelled support pairs per query (a model registers with it)
SUPPORT_IMAGES = "support_images"  # float [B, k, C, H, W], normalised like the query
SUPPORT_LABELS = "support_labels"  # int64 [B, k, H, W], class indices

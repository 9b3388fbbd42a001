"""Episodes of few-shot models (MatchSeg, UniverSeg): every query item carries k labelled support pairs.

    keys          the entries' names (``support_images``, ``support_labels``) and the context's (``support_set``),
                  spelled once for the data side and the models
    providers     the registry of batch-context providers (``register_context``, ``get_context``, ``ContextSource``)
    support_sets  the ``support_set`` provider: training and evaluation episodes, supports of single images
    backends      embeddings of images for support selection (HOG, LBP, random, a local CLIP checkpoint)
    cache         the on-disk cache of those embeddings
    retrieval     cosine top-k supports with the exclusions (the query itself, its file, its group)

Importing :mod:`datasets` registers the ``support_set`` provider. This package imports neither ``utils`` nor
``networks``.
"""
from .keys import SUPPORT_IMAGES, SUPPORT_LABELS, SUPPORT_SET
from .providers import ContextProvider, ContextSource, get_context, list_contexts, register_context

__all__ = ["SUPPORT_IMAGES", "SUPPORT_LABELS", "SUPPORT_SET", "ContextProvider", "ContextSource", "get_context",
           "list_contexts", "register_context"]

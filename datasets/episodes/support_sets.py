"""Episodes for support-set models (MatchSeg, UniverSeg): every query item carries its k support pairs.

The ``support_set`` batch context (:mod:`.providers`). For each query image, its support set is the ``k``
training images most similar to it (:mod:`.backends` embeddings, cached on disk by :mod:`.cache`, cosine top-k by
:mod:`.retrieval`),
never the query itself nor an image of its group (HAM10000: the same lesion), always from the training split:

* training: queries = the training split (augmented), pool = the same split; each support pair is augmented on
  its own (its own random stream per (epoch, query, slot)), the support table is computed once from the
  un-augmented images (spec §6);
* evaluation: queries = the validation / test images, pool = the training split of the data the model was trained
  on (cross-domain: the source set), supports resized to the network's size, not augmented.

Items gain ``support_images`` float32 [k, 3, s, s] (normalised like the query) and ``support_labels`` int64
[k, s, s]; collated batches hold [B, k, ...], which is what the model's ``forward_batch`` reads.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..augment_rgb import normalize_image
from ..errors import DataError
from ..rgb import resize_image, resize_label
from .backends import BACKENDS, make_backend, resolve_backend_name
from .cache import cached_embeddings
from .keys import SUPPORT_IMAGES, SUPPORT_LABELS, SUPPORT_SET
from .providers import ContextProvider, ContextSource, register_context
from .retrieval import build_support_table, topk_supports
SUPPORT_SALT = 0x5EED  # the supports' augmentation streams differ from the queries' of the same index
DEFAULT_CACHE_DIR = "runs/support_cache"


@dataclass(frozen=True)
class SupportSetOptions:
    """Options of the support-set context (``--support_size`` ... in the train and test scripts; for testing,
    None = the training run's value). ``support_root`` / ``support_list_dir`` / ``support_dataset``: where the
    pool (a training split) is read at test time; default: the data the checkpoint was trained on."""

    support_size: int | None = field(default=8, metadata={
        "help": "k, the number of support pairs per query (training and testing)"})
    support_selection: str | None = field(default=None, metadata={
        "help": "how supports are chosen: cosine top-k in the embedding of clip (a local CLIP checkpoint, "
                "--clip_checkpoint), hog, lbp, or random (ablation) (default: clip with --clip_checkpoint, else hog)",
        "choices": BACKENDS})
    clip_checkpoint: str | None = field(default=None, metadata={
        "help": "local open_clip checkpoint file of --clip_model for --support_selection clip (nothing downloads)"})
    clip_model: str | None = field(default="ViT-B-32", metadata={"help": "open_clip architecture of the checkpoint"})
    support_cache: str | None = field(default=DEFAULT_CACHE_DIR, metadata={
        "help": "folder of the cached embeddings (keyed by file list and backend)"})
    support_dataset: str | None = field(default=None, metadata={
        "help": "testing: data set of the support pool (default: the checkpoint's training data set)", "role": "test"})
    support_root: str | None = field(default=None, metadata={
        "help": "testing: folder of the support pool's images (default: the checkpoint's --root_path)",
        "role": "test"})
    support_list_dir: str | None = field(default=None, metadata={
        "help": "testing: list folder of the support pool; its training list is the pool (default: the checkpoint's "
                "--list_dir)", "role": "test"})


def evaluation_pair(image: np.ndarray, label: np.ndarray, img_size: int) -> tuple[np.ndarray, np.ndarray]:
    """A support pair as evaluation uses it: (image float32 [3, s, s] normalised, label int64 [s, s])."""
    size = (img_size, img_size)
    # (PIL resizes 8-bit label maps, not the readers' int64 ones)
    return normalize_image(resize_image(image, size)), resize_label(label.astype(np.uint8), size).astype(np.int64)


def stacked_pairs(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """The context entries of an evaluation item: its support pairs stacked."""
    return {SUPPORT_IMAGES: np.stack([image for image, _ in pairs]),
            SUPPORT_LABELS: np.stack([label for _, label in pairs])}


def context_pairs(extras: Mapping[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image [C, s, s], label [s, s]) of each support of one item, for overlays beside the query."""
    images, labels = np.asarray(extras[SUPPORT_IMAGES]), np.asarray(extras[SUPPORT_LABELS])
    return list(zip(images, labels))


class SupportSetDataset(torch.utils.data.Dataset):
    """The items of ``queries`` with ``support_images`` / ``support_labels`` from ``pool`` rows of ``table``."""

    def __init__(self, queries, pool, table: torch.Tensor, *, training: bool, img_size: int, seed: int,
                 info: Mapping[str, Any]):
        self.queries, self.pool, self.table = queries, pool, table
        self.training, self.img_size, self.seed = training, int(img_size), int(seed)
        self.epoch = 0
        self.context_info = dict(info)

    def __len__(self) -> int:
        return len(self.queries)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.queries.set_epoch(epoch)

    def support_pair(self, index: int, slot: int) -> tuple[Any, Any]:
        """Support ``slot`` of query ``index``: (image [3, s, s], label [s, s]) as tensors (training, augmented
        with the pool's transform) or arrays (evaluation, resized to the network's size)."""
        image, label = self.pool.load(int(self.table[index, slot]))
        if self.training and self.pool.transform is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index, slot, SUPPORT_SALT])
            return self.pool.transform(image, label, rng)
        return evaluation_pair(image, label, self.img_size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.queries[index])
        pairs = [self.support_pair(index, slot) for slot in range(self.table.shape[1])]
        if self.training:
            item[SUPPORT_IMAGES] = torch.stack([torch.as_tensor(image) for image, _ in pairs])
            item[SUPPORT_LABELS] = torch.stack([torch.as_tensor(label) for _, label in pairs])
        else:
            item.update(stacked_pairs(pairs))
        return item

    def support_names(self, index: int) -> list[str]:
        """Case names of query ``index``'s supports, in ranking order (the most similar first)."""
        return [self.pool.case_name(self.pool.entries[int(p)]) for p in self.table[index]]

    def case_notes(self) -> dict[str, dict[str, list[str]]]:
        """{query case name: {"supports": its support names}}: the engine shows these beside each case's result
        (results page) without knowing what a support is."""
        return {self.queries.case_name(self.queries.entries[index]): {"supports": self.support_names(index)}
                for index in range(len(self))}

    context_pairs = staticmethod(context_pairs)


def attach_support_sets(queries: ContextSource, pool: ContextSource, options: SupportSetOptions, *, training: bool,
                        img_size: int, seed: int, device: str = "cpu") -> SupportSetDataset:
    """Wrap ``queries`` so that every item carries its top-k support pairs from ``pool`` (a training split)."""
    for source in (queries, pool):
        check_image_set(source)
    k = checked_support_size(options, pool, training)
    name, backend = selection_backend(options, seed, device)
    images = {}  # path -> (dataset, index): embeddings read the stored, un-augmented image
    for source in (queries, pool):
        for index, path in enumerate(source.dataset.paths):
            images[path] = (source.dataset, index)

    def load_image(path: str) -> np.ndarray:
        dataset, index = images[path]
        return dataset.load(index)[0]

    table = build_support_table(queries.dataset.paths, pool.dataset.paths, backend, load_image, k,
                                options.support_cache or DEFAULT_CACHE_DIR, query_groups=queries.groups(),
                                pool_groups=pool.groups(), device=device)
    return SupportSetDataset(queries.dataset, pool.dataset, table, training=training, img_size=img_size, seed=seed,
                             info=context_info(name, backend, k, pool))


def check_image_set(source: ContextSource) -> None:
    if source.spec.kind != "image":
        raise ValueError(f"support sets are built for 2-D image data sets; {source.spec.name} holds volumes")


def checked_support_size(options: SupportSetOptions, pool: ContextSource, training: bool) -> int:
    """k, checked against the pool (one line naming the pool for an empty one or a k beyond it)."""
    k = options.support_size
    if len(pool.dataset) == 0:
        raise DataError(pool.dataset.list_path, "the support pool (training list) is empty")
    if k is None or k < 1:
        raise ValueError(f"--support_size must be >= 1, got {k}")
    if k > len(pool.dataset) - (1 if training else 0):
        raise ValueError(f"--support_size {k} is larger than the support pool: {pool.dataset.list_path} lists "
                         f"{len(pool.dataset)} images" + (" (one of them is the query)" if training else ""))
    return k


def selection_backend(options: SupportSetOptions, seed: int, device: str):
    """(backend name, embedding backend) of the options."""
    name = resolve_backend_name(options.support_selection, options.clip_checkpoint)
    return name, make_backend(name, clip_checkpoint=options.clip_checkpoint,
                              clip_model=options.clip_model or "ViT-B-32", seed=seed, device=device)


def context_info(name: str, backend, k: int, pool: ContextSource) -> dict[str, Any]:
    """What runs log and results record of the context (JSON-ready)."""
    return {"support_selection": name, "support_backend": backend.describe(), "support_size": k,
            "support_pool": f"{pool.spec.name} {pool.dataset.list_path} ({len(pool.dataset)} images)"}


class QuerySupports:
    """Supports of single query images that belong to no list (predict.py): the pool's embeddings are computed (or
    read from the cache) once, each query is embedded on its own and gets its top-k pool pairs, prepared as
    evaluation prepares them. A pool file with the query's own path is never its support."""

    def __init__(self, pool: ContextSource, options: SupportSetOptions, *, img_size: int, seed: int,
                 device: str = "cpu") -> None:
        check_image_set(pool)
        self.pool, self.img_size, self.device = pool, int(img_size), device
        self.k = checked_support_size(options, pool, training=False)
        name, self.backend = selection_backend(options, seed, device)
        dataset = pool.dataset
        position = {path: index for index, path in enumerate(dataset.paths)}
        self.embeddings = cached_embeddings(dataset.paths, self.backend,
                                            lambda path: dataset.load(position[path])[0],
                                            options.support_cache or DEFAULT_CACHE_DIR)
        self.info = context_info(name, self.backend, self.k, pool)

    context_pairs = staticmethod(context_pairs)

    def context(self, image: np.ndarray, path: str | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
        """(context entries of the query ``image`` uint8 [H, W, 3], names of its supports in ranking order)."""
        dataset = self.pool.dataset
        indices, _ = topk_supports(self.backend.embed([image]), self.embeddings, self.k,
                                   query_files=None if path is None else [path], pool_files=dataset.paths,
                                   device=self.device)
        pairs = [evaluation_pair(*dataset.load(int(index)), self.img_size) for index in indices[0]]
        names = [dataset.case_name(dataset.entries[int(index)]) for index in indices[0]]
        return stacked_pairs(pairs), names


SUPPORT_SET = register_context(ContextProvider(
    name=SUPPORT_SET, options=SupportSetOptions, attach=attach_support_sets,
    description="k labelled training images per query, chosen by embedding similarity",
    pool_fields={"dataset": "support_dataset", "root_path": "support_root", "list_dir": "support_list_dir"},
    image_keys=(SUPPORT_IMAGES,), for_queries=QuerySupports))

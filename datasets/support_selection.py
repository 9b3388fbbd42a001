"""Support-set selection for MatchSeg (spec §2, §10): image embeddings, an on-disk cache, cosine top-k retrieval.

For every query image, MatchSeg's support set is the ``k`` training images most similar to it in an embedding space
(the paper: a frozen CLIP image encoder; its ablation: HOG, LBP). This module holds the three pieces; it is data-side
context and imports neither ``utils`` nor ``networks``.

Backends (one interface, ``backend.embed(images) -> np.ndarray [N, D] float32``; ``images`` is an array
``[N, H, W, 3]`` / ``[N, H, W]`` / ``[N, H, W, 1]`` or a sequence of ``[H, W(, C)]`` arrays of different sizes;
``uint8`` is scaled by 1/255, floats are taken as intensities in [0, 1]):

- ``hog``: grey, resized to ``size x size`` (128), scikit-image HOG (9 orientations, 16 px cells, 2x2 blocks,
  L2-Hys) -> D = 1764. The default when no CLIP checkpoint is given.
- ``lbp``: grey, resized to ``size x size`` (128), uniform rotation-invariant LBP at (P, R) = (8, 1), (16, 2),
  (24, 3); the concatenated normalised histograms -> D = 10 + 18 + 26 = 54.
- ``random``: the ablation's random supports. Each image gets a standard-normal vector (D = 64) drawn from a
  generator seeded by ``seed`` and the image's content (shape, dtype, bytes), so no pixel information enters the
  ranking, the result is reproducible for a seed, a query list and a pool list embedded separately do not line up
  by position, and every allowed pool image is a priori equally likely to be chosen (the vectors are exchangeable).
- ``clip``: an open_clip image encoder (``model_name``, default ViT-B-32) with weights from a *local* checkpoint
  file (``--clip_checkpoint PATH``; nothing is downloaded; a missing file raises one FileNotFoundError naming it).
  Grey is repeated to 3 channels; images are resized to the encoder's input size (224 for ViT-B-32; no crop, so
  the whole image is seen) and normalised with CLIP's mean/std. open_clip is imported only inside this backend.

Cache (:func:`cached_embeddings`): embeddings are computed once per (absolute file list, backend name, backend
parameters incl. the checkpoint's sha256) and stored as ``<cache_dir>/<backend>_<hash16>.npz`` (written atomically:
temporary name, then rename); a changed file list, backend or parameter is a different key and is recomputed.

Retrieval (:func:`topk_supports`): embeddings are L2-normalised, similarity = cosine, top-k per query on a torch
device, in chunks of queries. Excluded from a query's candidates: the same index when the query list *is* the pool
(``same_list=True``), the same file path, and every pool image with the same group id (e.g. HAM10000 ``lesion_id``;
``None`` = no group). Order (ties included): similarity descending, then pool index ascending — the tie order is
defined, not left to the device's topk. Errors, each one ValueError: ``k < 1``, an empty pool, ``k`` larger than a
query's allowed pool.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .common import save_npz

__all__ = [
    "BACKENDS", "DEFAULT_BACKEND", "EmbeddingBackend", "HOGBackend", "LBPBackend", "RandomBackend", "ClipBackend",
    "make_backend", "resolve_backend_name", "cached_embeddings", "cache_key", "topk_supports", "build_support_table",
]

BACKENDS = ("clip", "hog", "lbp", "random")
DEFAULT_BACKEND = "hog"  # used when no CLIP checkpoint is given (spec §9.1)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_CACHE_VERSION = 1

ImagesLike = np.ndarray | Sequence[np.ndarray]


# ----------------------------------------------------------------------------------------------------------- images
def _image_list(images: ImagesLike) -> list[np.ndarray]:
    """Split ``images`` into single images ``[H, W]`` or ``[H, W, C]``, validated (ndim, channels, finite)."""
    if isinstance(images, np.ndarray):
        if images.ndim not in (3, 4):
            raise ValueError(f"images must be [N, H, W] or [N, H, W, C], got shape {images.shape}")
        items = list(images)
    else:
        items = [np.asarray(image) for image in images]
    for index, image in enumerate(items):
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
            raise ValueError(f"image {index}: expected [H, W], [H, W, 1] or [H, W, 3], got shape {image.shape}")
        if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
            raise ValueError(f"image {index}: expected uint8 or float, got {image.dtype}")
        if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
            raise ValueError(f"image {index}: contains NaN or inf")
    return items


def _to_float(image: np.ndarray) -> np.ndarray:
    """uint8 -> [0, 1] float32; float -> float32 as is. Always ``[H, W, C]``."""
    image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    return image[..., None] if image.ndim == 2 else image


def _to_grey(image: np.ndarray) -> np.ndarray:
    """``[H, W]`` float32 grey (ITU-R 601 luma for RGB)."""
    image = _to_float(image)
    if image.shape[2] == 1:
        return image[..., 0]
    return image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _resize_grey(image: np.ndarray, size: int) -> np.ndarray:
    from skimage.transform import resize

    grey = _to_grey(image)
    if grey.shape != (size, size):
        grey = resize(grey, (size, size), order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)
    return grey


# --------------------------------------------------------------------------------------------------------- backends
class EmbeddingBackend:
    """``embed(images) -> [N, D] float32``; ``params()`` is the backend's identity in the cache key."""

    name = "base"

    def params(self) -> dict[str, Any]:
        return {}

    def describe(self) -> str:
        """One line for run logs and results, e.g. ``hog(size=128, ...)``."""
        return f"{self.name}(" + ", ".join(f"{k}={v}" for k, v in self.params().items()) + ")"

    def embed(self, images: ImagesLike) -> np.ndarray:
        items = _image_list(images)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._embed_one(image) for image in items]).astype(np.float32)

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def _embed_one(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class HOGBackend(EmbeddingBackend):
    name = "hog"

    def __init__(self, size: int = 128, orientations: int = 9, pixels_per_cell: int = 16, cells_per_block: int = 2):
        if size < pixels_per_cell * cells_per_block:
            raise ValueError(f"hog: size {size} is smaller than one block ({pixels_per_cell * cells_per_block} px)")
        self.size, self.orientations = int(size), int(orientations)
        self.pixels_per_cell, self.cells_per_block = int(pixels_per_cell), int(cells_per_block)

    def params(self) -> dict[str, Any]:
        return {"size": self.size, "orientations": self.orientations, "pixels_per_cell": self.pixels_per_cell,
                "cells_per_block": self.cells_per_block, "block_norm": "L2-Hys"}

    @property
    def dim(self) -> int:
        blocks = self.size // self.pixels_per_cell - self.cells_per_block + 1
        return blocks * blocks * self.cells_per_block ** 2 * self.orientations

    def _embed_one(self, image: np.ndarray) -> np.ndarray:
        from skimage.feature import hog

        grey = _resize_grey(image, self.size)
        return hog(grey, orientations=self.orientations, pixels_per_cell=(self.pixels_per_cell,) * 2,
                   cells_per_block=(self.cells_per_block,) * 2, block_norm="L2-Hys", feature_vector=True)


class LBPBackend(EmbeddingBackend):
    name = "lbp"

    def __init__(self, size: int = 128, scales: Sequence[tuple[int, int]] = ((8, 1), (16, 2), (24, 3))):
        if not scales:
            raise ValueError("lbp: scales must not be empty")
        self.size = int(size)
        self.scales = tuple((int(p), int(r)) for p, r in scales)

    def params(self) -> dict[str, Any]:
        return {"size": self.size, "scales": [list(s) for s in self.scales], "method": "uniform"}

    @property
    def dim(self) -> int:
        return sum(p + 2 for p, _ in self.scales)

    def _embed_one(self, image: np.ndarray) -> np.ndarray:
        from skimage.feature import local_binary_pattern

        grey = np.clip(np.rint(_resize_grey(image, self.size) * 255.0), 0, 255).astype(np.uint8)
        histograms = []
        for points, radius in self.scales:
            codes = local_binary_pattern(grey, points, radius, method="uniform")  # values 0 .. points + 1
            hist = np.bincount(codes.astype(np.int64).ravel(), minlength=points + 2)[: points + 2]
            histograms.append(hist.astype(np.float32) / max(codes.size, 1))
        return np.concatenate(histograms)


class RandomBackend(EmbeddingBackend):
    name = "random"

    def __init__(self, seed: int = 0, dim: int = 64):
        self.seed, self._dim = int(seed), int(dim)

    def params(self) -> dict[str, Any]:
        return {"seed": self.seed, "dim": self._dim}

    @property
    def dim(self) -> int:
        return self._dim

    def _embed_one(self, image: np.ndarray) -> np.ndarray:
        image = np.ascontiguousarray(image)
        digest = hashlib.sha256(f"{self.seed}|{image.shape}|{image.dtype}|".encode() + image.tobytes()).digest()
        generator = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        return generator.standard_normal(self._dim).astype(np.float32)


def _file_sha256(path: str, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class ClipBackend(EmbeddingBackend):
    """open_clip image encoder from a local checkpoint (a state_dict file open_clip's ``pretrained=`` accepts)."""

    name = "clip"

    def __init__(self, checkpoint: str | os.PathLike | None, model_name: str = "ViT-B-32", device: str = "cpu",
                 batch_size: int = 32):
        if checkpoint is None or not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"--clip_checkpoint: CLIP checkpoint file not found: {checkpoint!s} "
                                    f"(the clip backend needs a local open_clip {model_name} checkpoint; "
                                    f"nothing is downloaded; without one use --support_selection hog)")
        self.checkpoint = os.path.abspath(checkpoint)
        self.model_name, self.device, self.batch_size = model_name, device, int(batch_size)
        self._sha256: str | None = None
        self._model = None

    def params(self) -> dict[str, Any]:
        if self._sha256 is None:
            self._sha256 = _file_sha256(self.checkpoint)
        return {"model": self.model_name, "checkpoint_sha256": self._sha256, "mean": CLIP_MEAN, "std": CLIP_STD}

    def describe(self) -> str:
        return f"clip(model={self.model_name}, checkpoint={self.checkpoint})"

    def _load(self):
        if self._model is None:
            try:
                import open_clip
            except ImportError as err:  # pragma: no cover - depends on the environment
                raise ImportError("the clip backend needs open-clip-torch (pip install open-clip-torch)") from err
            model = open_clip.create_model(self.model_name, pretrained=self.checkpoint, device=self.device)
            self._model = model.eval()
        return self._model

    @property
    def image_size(self) -> tuple[int, int]:
        size = getattr(self._load().visual, "image_size", 224)
        return (size, size) if isinstance(size, int) else tuple(size)

    @property
    def dim(self) -> int:
        return int(getattr(self._load().visual, "output_dim", 512))

    def embed(self, images: ImagesLike) -> np.ndarray:
        items = _image_list(images)
        model = self._load()
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        height, width = self.image_size
        mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(items), self.batch_size):
                batch = []
                for image in items[start:start + self.batch_size]:
                    tensor = torch.from_numpy(_to_float(image)).permute(2, 0, 1)[None].to(self.device)
                    if tensor.shape[1] == 1:
                        tensor = tensor.expand(-1, 3, -1, -1)
                    tensor = torch.nn.functional.interpolate(tensor, size=(height, width), mode="bicubic",
                                                             align_corners=False, antialias=True)
                    batch.append(tensor.clamp(0.0, 1.0))
                pixels = (torch.cat(batch) - mean) / std
                outputs.append(model.encode_image(pixels).float().cpu())
        return torch.cat(outputs).numpy().astype(np.float32)


def resolve_backend_name(requested: str | None, clip_checkpoint: str | os.PathLike | None = None) -> str:
    """The backend to use: ``requested`` if given (validated), else ``clip`` with a checkpoint, else ``hog``."""
    if requested is None:
        return "clip" if clip_checkpoint else DEFAULT_BACKEND
    if requested not in BACKENDS:
        raise ValueError(f"--support_selection: unknown backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    return requested


def make_backend(name: str, *, clip_checkpoint: str | os.PathLike | None = None, clip_model: str = "ViT-B-32",
                 seed: int = 0, device: str = "cpu") -> EmbeddingBackend:
    """Build a backend by name (``clip`` needs ``clip_checkpoint``, an existing local file)."""
    name = resolve_backend_name(name, clip_checkpoint)
    if name == "hog":
        return HOGBackend()
    if name == "lbp":
        return LBPBackend()
    if name == "random":
        return RandomBackend(seed=seed)
    return ClipBackend(clip_checkpoint, model_name=clip_model, device=device)


# ------------------------------------------------------------------------------------------------------------ cache
def cache_key(files: Sequence[str | os.PathLike], backend: EmbeddingBackend) -> str:
    """sha256 of (cache version, absolute file list in order, backend name, backend parameters)."""
    payload = {"version": _CACHE_VERSION, "backend": backend.name, "params": backend.params(),
               "files": [os.path.abspath(os.fspath(f)) for f in files]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def cached_embeddings(files: Sequence[str | os.PathLike], backend: EmbeddingBackend,
                      load_image: Callable[[str], np.ndarray], cache_dir: str | os.PathLike,
                      chunk_size: int = 64) -> np.ndarray:
    """Embeddings ``[len(files), D]`` of the images ``load_image(file)`` returns, from the cache when present.

    A cache file that does not match (another file list, a wrong shape) or cannot be read is recomputed and
    replaced.
    """
    files = [os.fspath(f) for f in files]
    key = cache_key(files, backend)
    path = os.path.join(os.fspath(cache_dir), f"{backend.name}_{key[:16]}.npz")
    absolute = np.array([os.path.abspath(f) for f in files], dtype=str)
    if os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as data:
                embeddings, stored_key = data["embeddings"], str(data["key"])
                stored_files = data["files"]
            if (stored_key == key and embeddings.ndim == 2 and embeddings.shape[0] == len(files)
                    and stored_files.shape == absolute.shape and (stored_files == absolute).all()):
                return embeddings.astype(np.float32)
        except (OSError, ValueError, KeyError):
            pass  # unreadable or foreign: recompute
    parts = [backend.embed([load_image(f) for f in files[start:start + chunk_size]])
             for start in range(0, len(files), chunk_size)]
    embeddings = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 0), np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(files):
        raise ValueError(f"{backend.name}: embed returned shape {embeddings.shape} for {len(files)} images")
    save_npz(path, embeddings=embeddings, files=absolute, key=np.array(key),
             backend=np.array(backend.describe()))
    return embeddings


# -------------------------------------------------------------------------------------------------------- retrieval
def _exclude(sim: torch.Tensor, start: int, same_list: bool, query_files, pool_files, query_groups,
             pool_groups) -> torch.Tensor:
    """Set to -inf the similarities ``sim`` [rows of queries start.., pool] of pool images that may not support
    the query: its own index (``same_list``), its own file path, its group (``None`` never matches)."""
    rows, pool_size = sim.shape
    if same_list:
        index = torch.arange(rows, device=sim.device)
        sim[index, index + start] = float("-inf")
    for query_ids, pool_ids in ((query_files, pool_files), (query_groups, pool_groups)):
        if query_ids is None or pool_ids is None:
            continue
        codes: dict[Any, int] = {}
        pool_codes = torch.tensor([-1 if g is None else codes.setdefault(g, len(codes)) for g in pool_ids],
                                  dtype=torch.long, device=sim.device)
        query_codes = torch.tensor([-2 if g is None else codes.get(g, -2) for g in query_ids[start:start + rows]],
                                   dtype=torch.long, device=sim.device)
        sim.masked_fill_(query_codes[:, None] == pool_codes[None, :], float("-inf"))
    return sim


def topk_supports(query_embeddings: np.ndarray | torch.Tensor, pool_embeddings: np.ndarray | torch.Tensor, k: int,
                  *, same_list: bool = False, query_files: Sequence[str] | None = None,
                  pool_files: Sequence[str] | None = None, query_groups: Sequence[Any] | None = None,
                  pool_groups: Sequence[Any] | None = None, device: str | torch.device = "cpu",
                  chunk_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k pool images per query by cosine similarity: ``(indices [Q, k] long, similarities [Q, k] float32)``.

    Order: similarity descending, ties by pool index ascending. Excluded: the query's own index when
    ``same_list`` (query list is the pool list), any pool image with the same file path, and any pool image with
    the same group id (``None`` never matches). Returned on CPU.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"--support_size: k must be an integer >= 1, got {k!r}")
    k = int(k)
    query = torch.as_tensor(np.asarray(query_embeddings) if not torch.is_tensor(query_embeddings)
                            else query_embeddings).to(device=device, dtype=torch.float32)
    pool = torch.as_tensor(np.asarray(pool_embeddings) if not torch.is_tensor(pool_embeddings)
                           else pool_embeddings).to(device=device, dtype=torch.float32)
    if pool.ndim != 2 or pool.shape[0] == 0:
        raise ValueError(f"support pool is empty (pool embeddings shape {tuple(pool.shape)}): "
                         "the training split has no images")
    if query.ndim != 2 or query.shape[1] != pool.shape[1]:
        raise ValueError(f"query embeddings {tuple(query.shape)} do not match pool embeddings {tuple(pool.shape)}")
    num_queries, pool_size = query.shape[0], pool.shape[0]
    for name, ids, size in (("query_files", query_files, num_queries), ("pool_files", pool_files, pool_size),
                            ("query_groups", query_groups, num_queries), ("pool_groups", pool_groups, pool_size)):
        if ids is not None and len(ids) != size:
            raise ValueError(f"{name} has {len(ids)} entries for {size} embeddings")
    if same_list and num_queries != pool_size:
        raise ValueError(f"same_list=True but {num_queries} queries and {pool_size} pool images")
    if not (torch.isfinite(query).all() and torch.isfinite(pool).all()):
        raise ValueError("embeddings contain NaN or inf")
    if query_files is not None:
        query_files = [os.path.abspath(os.fspath(f)) for f in query_files]
    if pool_files is not None:
        pool_files = [os.path.abspath(os.fspath(f)) for f in pool_files]
    if k > pool_size:
        raise ValueError(f"--support_size {k} is larger than the support pool ({pool_size} training images)")
    query = torch.nn.functional.normalize(query, dim=1)
    pool = torch.nn.functional.normalize(pool, dim=1)
    all_indices, all_values = [], []
    for start in range(0, num_queries, chunk_size):
        stop = min(start + chunk_size, num_queries)
        sim = _exclude(query[start:stop] @ pool.T, start, same_list, query_files, pool_files, query_groups,
                       pool_groups)
        # one more than k: a tie across the k-th place shows as values[:, k - 1] == values[:, k]
        values, indices = torch.topk(sim, min(k + 1, pool_size), dim=1)
        if bool(torch.isinf(values[:, k - 1]).any()):
            row = int(torch.nonzero(torch.isinf(values[:, k - 1]))[0, 0])
            allowed = int(torch.isfinite(sim[row]).sum())
            raise ValueError(f"--support_size {k} is larger than the support pool of query {start + row} "
                             f"({allowed} of {pool_size} training images left after excluding the query itself "
                             "and its group)")
        crossing = values[:, k - 1] == values[:, k] if values.shape[1] > k else None
        values, indices = values[:, :k], indices[:, :k]
        # deterministic ties: order the k picks by (value desc, index asc) ...
        indices, order = torch.sort(indices, dim=1)
        values = torch.gather(values, 1, order)
        values, order = torch.sort(values, dim=1, descending=True, stable=True)
        indices = torch.gather(indices, 1, order)
        # ... and where a tie crosses the k-th place, pick the lowest indices among the tied (full stable sort)
        if crossing is not None and bool(crossing.any()):
            rows = torch.nonzero(crossing)[:, 0]
            sorted_values, sorted_indices = torch.sort(sim[rows], dim=1, descending=True, stable=True)
            values[rows], indices[rows] = sorted_values[:, :k], sorted_indices[:, :k]
        all_indices.append(indices.cpu())
        all_values.append(values.cpu())
    if not all_indices:
        return torch.zeros(0, k, dtype=torch.long), torch.zeros(0, k)
    return torch.cat(all_indices), torch.cat(all_values)


def build_support_table(query_files: Sequence[str], pool_files: Sequence[str], backend: EmbeddingBackend,
                        load_image: Callable[[str], np.ndarray], k: int, cache_dir: str | os.PathLike, *,
                        query_groups: Sequence[Any] | None = None, pool_groups: Sequence[Any] | None = None,
                        device: str | torch.device = "cpu") -> torch.Tensor:
    """Support indices ``[len(query_files), k]`` into ``pool_files`` (the training split), embeddings cached.

    The query list is treated as the pool itself (own index excluded) when both lists are equal.
    """
    if len(pool_files) == 0:
        raise ValueError("support pool is empty: the training split has no images")
    same_list = [os.path.abspath(os.fspath(f)) for f in query_files] == \
        [os.path.abspath(os.fspath(f)) for f in pool_files]
    pool_embeddings = cached_embeddings(pool_files, backend, load_image, cache_dir)
    query_embeddings = pool_embeddings if same_list else cached_embeddings(query_files, backend, load_image,
                                                                           cache_dir)
    indices, _ = topk_supports(query_embeddings, pool_embeddings, k, same_list=same_list, query_files=query_files,
                               pool_files=pool_files, query_groups=query_groups, pool_groups=pool_groups,
                               device=device)
    return indices

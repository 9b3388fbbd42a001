"""Embedding backends of support selection (MatchSeg spec §2, §10): one interface,
``backend.embed(images) -> np.ndarray [N, D] float32``; ``images`` is an array ``[N, H, W, 3]`` / ``[N, H, W]`` /
``[N, H, W, 1]`` or a sequence of ``[H, W(, C)]`` arrays of different sizes; ``uint8`` is scaled by 1/255, floats are
taken as intensities in [0, 1]. ``params()`` is a backend's identity in the embeddings cache (:mod:`.cache`).

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
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "BACKENDS", "DEFAULT_BACKEND", "EmbeddingBackend", "HOGBackend", "LBPBackend", "RandomBackend", "ClipBackend",
    "make_backend", "resolve_backend_name",
]

BACKENDS = ("clip", "hog", "lbp", "random")
DEFAULT_BACKEND = "hog"  # used when no CLIP checkpoint is given (spec §9.1)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

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

"""The on-disk cache of support-selection embeddings: computed once per (absolute file list, backend name, backend
parameters incl. a CLIP checkpoint's sha256) and stored as ``<cache_dir>/<backend>_<hash16>.npz`` (written
atomically); a changed file list, backend or parameter is a different key and is recomputed, a cache file that does
not match or cannot be read is recomputed and replaced."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence

import numpy as np

from ..io.arrays import save_npz
from .backends import EmbeddingBackend

__all__ = ["cache_key", "cached_embeddings"]

_CACHE_VERSION = 1


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

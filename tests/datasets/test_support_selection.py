"""Support-set selection (MatchSeg, spec §2): backends, on-disk cache, cosine top-k retrieval with exclusions."""
from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
import torch

from datasets.episodes.backends import (
    BACKENDS, ClipBackend, EmbeddingBackend, HOGBackend, LBPBackend, RandomBackend, make_backend, resolve_backend_name,
)
from datasets.episodes.cache import cached_embeddings
from datasets.episodes.retrieval import build_support_table, topk_supports


def brute_force_topk(query, pool, k, same_list=False, query_files=None, pool_files=None, query_groups=None,
                     pool_groups=None):
    """Plain-Python reference: cosine similarity, exclusions, order (similarity desc, pool index asc)."""
    query = np.asarray(query, dtype=np.float32)
    pool = np.asarray(pool, dtype=np.float32)
    result = []
    for i, q in enumerate(query):
        qn = q / max(float(np.linalg.norm(q)), 1e-12)
        candidates = []
        for j, p in enumerate(pool):
            if same_list and i == j:
                continue
            if query_files is not None and os.path.abspath(query_files[i]) == os.path.abspath(pool_files[j]):
                continue
            if (query_groups is not None and query_groups[i] is not None
                    and query_groups[i] == pool_groups[j]):
                continue
            pn = p / max(float(np.linalg.norm(p)), 1e-12)
            candidates.append((float(np.dot(qn.astype(np.float64), pn.astype(np.float64))), j))
        candidates.sort(key=lambda item: (-item[0], item[1]))
        result.append([j for _, j in candidates[:k]])
    return result


def _check_against_reference(indices, values, query, pool, reference):
    assert indices.dtype == torch.long and indices.shape == (len(query), len(reference[0]))
    query_n = query / np.linalg.norm(query, axis=1, keepdims=True)
    pool_n = pool / np.linalg.norm(pool, axis=1, keepdims=True)
    for i, row in enumerate(indices.tolist()):
        if row != reference[i]:  # only float rounding between the two may reorder near-equal similarities
            got = sorted(float(query_n[i] @ pool_n[j]) for j in row)
            want = sorted(float(query_n[i] @ pool_n[j]) for j in reference[i])
            np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_allclose(values[i].numpy(), [query_n[i] @ pool_n[j] for j in row], atol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_topk_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    num_query, num_pool, dim = int(rng.integers(1, 12)), int(rng.integers(5, 20)), int(rng.integers(2, 9))
    k = int(rng.integers(1, 5))
    query = rng.standard_normal((num_query, dim)).astype(np.float32)
    pool = rng.standard_normal((num_pool, dim)).astype(np.float32)
    indices, values = topk_supports(query, pool, k, chunk_size=int(rng.integers(1, 8)))
    _check_against_reference(indices, values, query, pool, brute_force_topk(query, pool, k))


@pytest.mark.parametrize("seed", range(4))
def test_topk_same_list_and_groups_match_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    num, dim, k = 16, 4, 3
    pool = rng.standard_normal((num, dim)).astype(np.float32)
    groups = [None if g == 0 else f"lesion{g}" for g in rng.integers(0, 5, num)]
    indices, values = topk_supports(pool, pool, k, same_list=True, query_groups=groups, pool_groups=groups,
                                    chunk_size=5)
    reference = brute_force_topk(pool, pool, k, same_list=True, query_groups=groups, pool_groups=groups)
    _check_against_reference(indices, values, pool, pool, reference)
    for i, row in enumerate(indices.tolist()):
        assert i not in row
        if groups[i] is not None:
            assert all(groups[j] != groups[i] for j in row)


def test_ties_are_ordered_by_pool_index():
    # integer-valued embeddings with many exact ties: order is (similarity desc, pool index asc), exactly
    rng = np.random.default_rng(7)
    for _ in range(5):
        pool = rng.integers(0, 2, (30, 3)).astype(np.float32) + np.array([1, 0, 0], np.float32)
        query = rng.integers(0, 2, (9, 3)).astype(np.float32) + np.array([1, 0, 0], np.float32)
        for k in (1, 4, 11):
            indices, _ = topk_supports(query, pool, k, chunk_size=4)
            assert indices.tolist() == brute_force_topk(query, pool, k)
    # all equal: the first k pool indices, skipping the query itself
    same = np.ones((6, 2), np.float32)
    assert topk_supports(same, same, 3, same_list=True)[0].tolist() == [
        [1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2], [0, 1, 2], [0, 1, 2]]


def test_query_never_in_its_own_support_set(tmp_path):
    # duplicated embeddings: without exclusion the query (similarity 1) and its twin would come first
    pool = np.repeat(np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32), 2, axis=0)
    indices, _ = topk_supports(pool, pool, 1, same_list=True)
    assert indices[:, 0].tolist() == [1, 0, 3, 2, 5, 4, 7, 6, 9, 8]
    # a twin in the same group (same lesion) is excluded too
    groups = [i // 2 for i in range(10)]
    indices, _ = topk_supports(pool, pool, 2, same_list=True, query_groups=groups, pool_groups=groups)
    for i, row in enumerate(indices.tolist()):
        assert i not in row and i ^ 1 not in row
    # separate query list: the same file path is excluded, the other lists' positions do not matter
    files = [str(tmp_path / f"img{i}.png") for i in range(10)]
    indices, _ = topk_supports(pool[:3], pool, 1, query_files=files[:3], pool_files=files)
    assert indices[:, 0].tolist() == [1, 0, 3]


def test_bad_inputs_raise_one_clear_error():
    pool = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        topk_supports(pool, pool, 0)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        topk_supports(pool, pool, 2.0)
    with pytest.raises(ValueError, match="pool is empty"):
        topk_supports(pool, np.zeros((0, 3), np.float32), 1)
    with pytest.raises(ValueError, match="larger than the support pool"):
        topk_supports(pool, pool, 5)
    with pytest.raises(ValueError, match="larger than the support pool of query 0"):
        topk_supports(pool, pool, 4, same_list=True)  # 3 left after excluding itself
    with pytest.raises(ValueError, match="larger than the support pool of query"):
        topk_supports(pool, pool, 2, same_list=True, query_groups=[1, 1, 1, 2], pool_groups=[1, 1, 1, 2])
    with pytest.raises(ValueError, match="pool is empty"):
        build_support_table(["a.png"], [], RandomBackend(), lambda f: np.zeros((4, 4), np.uint8), 1, "unused")
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_backend_name("sift")


class CountingBackend(EmbeddingBackend):
    name = "counting"

    def __init__(self, scale: float = 1.0):
        self.scale, self.calls, self.images = scale, 0, 0

    def params(self):
        return {"scale": self.scale}

    def embed(self, images):
        self.calls += 1
        self.images += len(images)
        return np.stack([np.asarray(image, np.float32).reshape(-1)[:4] * self.scale for image in images])


def _images(tmp_path, count):
    rng = np.random.default_rng(1)
    files = []
    for i in range(count):
        path = tmp_path / "data" / f"img{i}.npy"
        path.parent.mkdir(exist_ok=True)
        np.save(path, rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        files.append(str(path))
    return files


def test_cache_hit_and_miss(tmp_path):
    files = _images(tmp_path, 5)
    cache = tmp_path / "cache"
    backend = CountingBackend()
    first = cached_embeddings(files, backend, np.load, cache)
    assert backend.calls == 1 and first.shape == (5, 4) and first.dtype == np.float32
    assert len(list(cache.glob("*.npz"))) == 1 and not list(cache.glob("*.tmp"))
    again = cached_embeddings(files, backend, np.load, cache)  # hit: no call
    np.testing.assert_array_equal(first, again)
    assert backend.calls == 1
    cached_embeddings(files, CountingBackend(), np.load, cache)  # a new instance, same parameters: hit
    assert backend.calls == 1
    cached_embeddings(files[:4], backend, np.load, cache)  # changed file list: miss
    assert backend.calls == 2
    cached_embeddings(list(reversed(files)), backend, np.load, cache)  # other order: miss
    assert backend.calls == 3
    other = CountingBackend(scale=2.0)  # changed backend parameters: miss
    np.testing.assert_allclose(cached_embeddings(files, other, np.load, cache), 2 * first)
    assert other.calls == 1
    # a corrupt cache file is recomputed and replaced
    for path in cache.glob("*.npz"):
        path.write_bytes(b"not an npz")
    fresh = CountingBackend()
    np.testing.assert_array_equal(cached_embeddings(files, fresh, np.load, cache), first)
    assert fresh.calls == 1
    # large lists are embedded in chunks
    chunked = CountingBackend(scale=3.0)
    cached_embeddings(files, chunked, np.load, cache, chunk_size=2)
    assert chunked.calls == 3 and chunked.images == 5


def test_cache_key_changes_with_backend_type(tmp_path):
    files = _images(tmp_path, 3)
    hog = cached_embeddings(files, HOGBackend(), np.load, tmp_path / "cache")
    lbp = cached_embeddings(files, LBPBackend(), np.load, tmp_path / "cache")
    assert hog.shape == (3, 1764) and lbp.shape == (3, 54)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_build_support_table_train_and_eval(tmp_path):
    files = _images(tmp_path, 8)
    backend = CountingBackend()
    train = build_support_table(files, files, backend, np.load, 3, tmp_path / "cache",
                                query_groups=[i // 2 for i in range(8)], pool_groups=[i // 2 for i in range(8)])
    assert train.shape == (8, 3) and backend.calls == 1  # the pool is the query list: embedded once
    for i, row in enumerate(train.tolist()):
        assert i not in row and i ^ 1 not in row
    val = build_support_table(files[:2], files[2:], backend, np.load, 2, tmp_path / "cache")
    assert val.shape == (2, 2) and val.max() < 6


@pytest.mark.parametrize("backend_cls,dim", [(HOGBackend, 1764), (LBPBackend, 54), (RandomBackend, 64)])
def test_backends_are_deterministic_with_fixed_shape(backend_cls, dim):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (3, 96, 80, 3), dtype=np.uint8)
    first = backend_cls().embed(rgb)
    assert first.shape == (3, dim) and first.dtype == np.float32 and np.isfinite(first).all()
    np.testing.assert_array_equal(first, backend_cls().embed(rgb))
    # grey, float and mixed sizes are accepted; every image gives one D-vector
    mixed = [rng.random((50, 70)).astype(np.float32), rng.integers(0, 256, (130, 128, 1), dtype=np.uint8)]
    assert backend_cls().embed(mixed).shape == (2, dim)
    assert backend_cls().embed(np.zeros((0, 8, 8, 3), np.uint8)).shape == (0, dim)
    # an image's embedding does not depend on its batch neighbours
    np.testing.assert_array_equal(backend_cls().embed(rgb[1:2])[0], first[1])


def test_hog_lbp_sensible():
    # a float image in [0, 1] and its uint8 version embed (almost) alike; LBP histograms sum to 1 per scale
    image = (np.random.default_rng(4).random((64, 64, 3)) * 255).round().astype(np.uint8)
    np.testing.assert_allclose(HOGBackend().embed([image]), HOGBackend().embed([image / 255.0]), atol=1e-5)
    lbp = LBPBackend().embed([image])[0]
    np.testing.assert_allclose([lbp[:10].sum(), lbp[10:28].sum(), lbp[28:].sum()], 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="expected"):
        HOGBackend().embed(np.zeros((2, 8, 8, 2), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        LBPBackend().embed([np.full((8, 8), np.nan, np.float32)])


def test_random_backend_depends_on_seed_not_position():
    images = np.random.default_rng(5).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    a = RandomBackend(seed=0).embed(images)
    assert not np.allclose(a, RandomBackend(seed=1).embed(images))
    np.testing.assert_array_equal(RandomBackend(seed=0).embed(images[::-1]), a[::-1])


def test_backend_names_and_default(tmp_path):
    assert BACKENDS == ("clip", "hog", "lbp", "random")
    assert resolve_backend_name(None) == "hog"
    assert resolve_backend_name(None, clip_checkpoint="x.pt") == "clip"
    assert make_backend("hog").describe().startswith("hog(")
    assert isinstance(make_backend("lbp"), LBPBackend) and isinstance(make_backend("random", seed=3), RandomBackend)


def test_clip_missing_checkpoint_is_one_clear_error(tmp_path):
    missing = tmp_path / "nope" / "clip.pt"
    with pytest.raises(FileNotFoundError, match=r"--clip_checkpoint.*nope.*clip\.pt"):
        make_backend("clip", clip_checkpoint=str(missing))
    with pytest.raises(FileNotFoundError, match="--clip_checkpoint"):
        make_backend("clip")


@pytest.mark.skipif(importlib.util.find_spec("open_clip") is None, reason="open-clip-torch not installed")
def test_clip_backend_loads_a_local_checkpoint(tmp_path):
    """A *randomly initialised*, tiny open_clip model saved to a temp file: this shows the path works (local file,
    CLIP preprocessing, encode_image); it is NOT CLIP's weights and its embeddings carry no meaning."""
    import open_clip

    config = {"embed_dim": 16,
              "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
              "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1}}
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny-test-vit.json").write_text(json.dumps(config))
    open_clip.add_model_config(str(tmp_path / "configs" / "tiny-test-vit.json"))
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-test-vit")
    checkpoint = tmp_path / "tiny_random_clip.pt"
    torch.save(model.state_dict(), checkpoint)

    backend = make_backend("clip", clip_checkpoint=str(checkpoint), clip_model="tiny-test-vit")
    assert isinstance(backend, ClipBackend) and backend.image_size == (32, 32)
    images = [np.random.default_rng(6).integers(0, 256, (40, 50, 3), dtype=np.uint8),
              np.random.default_rng(7).random((20, 20)).astype(np.float32)]  # grey -> 3 channels
    embeddings = backend.embed(images)
    assert embeddings.shape == (2, 16) and embeddings.dtype == np.float32 and np.isfinite(embeddings).all()
    np.testing.assert_allclose(backend.embed(images[:1]), embeddings[:1], rtol=1e-5, atol=1e-5)
    # the checkpoint's content is part of the cache key: a different file of the same name recomputes
    files = _images(tmp_path, 3)
    first = cached_embeddings(files, backend, np.load, tmp_path / "cache")
    torch.manual_seed(1)
    torch.save(open_clip.create_model("tiny-test-vit").state_dict(), checkpoint)
    second = cached_embeddings(files, make_backend("clip", clip_checkpoint=str(checkpoint),
                                                   clip_model="tiny-test-vit"), np.load, tmp_path / "cache")
    assert not np.allclose(first, second)
    assert len(list((tmp_path / "cache").glob("clip_*.npz"))) == 2

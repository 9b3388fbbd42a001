"""MatchSeg against its UniverSeg backbone (issue 14): train step, inference and peak memory; support retrieval.

    python benchmarks/bench_matchseg.py --device cpu --threads 2 --batch 8 --shots 8 --img_size 128 --json out.json
    python benchmarks/bench_matchseg.py --device cuda --batch 32 --amp bf16 --retrieval_items 10000

Models: ``matchseg`` (RGB, widths 64, Joint Attention on the <= 32x32 levels) and ``universeg`` (grey, widths 64,
no Joint Attention), both as ``networks.create_model`` builds them with 2 classes at ``--img_size``. Each gets a
fixed random batch: query ``[B, C, H, W]``, ``--shots`` supports ``[B, k, C, H, W]`` with binary labels, query
labels. train_step_s: forward_batch, the model's default loss (Dice + BCE + Focal), backward, the step of the
optimiser the trainer builds from the model's registered recipe (Adam); infer_s: forward_batch under inference_mode.
The models alternate within each repetition; medians are reported. peak_mem_mb is the train step's, measured as
benchmarks/bench_model.py measures it: a child process builds only that model and runs one train step (CUDA
max_memory_allocated, CPU peak growth of the resident set). "ratio": matchseg / universeg of every figure.

Retrieval (``--retrieval_items N``, 0 to skip): N cached embeddings (seeded standard-normal, float32) per
dimension of ``--retrieval_dims`` (512: CLIP ViT-B/32; 1764: the default HOG backend), every one a query against
all N as the pool with itself excluded (``topk_supports(..., same_list=True)``), k = ``--shots``, on ``--device``.
topk_s: one full N x N top-k (host embeddings in, indices on the host out); cache_load_s: ``cached_embeddings``
answering from its on-disk cache (a hit: key, file list check, ``.npz`` load). A few query rows of the result are
checked against a float64 brute force (``verified_rows``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_model import (  # noqa: E402
    AMP_DTYPES, RssPeak, run_config, run_timings, start_run, steps_for, synchronize, write_report,
)

from datasets.episodes.backends import EmbeddingBackend  # noqa: E402
from datasets.episodes.cache import cached_embeddings  # noqa: E402
from datasets.episodes.retrieval import topk_supports  # noqa: E402
from networks import create_model, model_entry  # noqa: E402
from utils.checkpoint import json_safe  # noqa: E402

MODELS = ("matchseg", "universeg")
IN_CHANS = {"matchseg": 3, "universeg": 1}
NUM_CLASSES = 2
RETRIEVAL_DIMS = (512, 1764)  # CLIP ViT-B/32 width; HOG at 128 px, 9 orientations, 16 px cells, 2x2 blocks
VERIFIED_ROWS = 8


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--img_size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--shots", type=int, default=8, help="support set size k (also the retrieval's k)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--amp", choices=tuple(AMP_DTYPES), default="none")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per model (and per retrieval)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions first")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--model", choices=("both", *MODELS), default="both")
    parser.add_argument("--grad_checkpointing", action="store_true", help="both models recompute every level")
    parser.add_argument("--retrieval_items", type=int, default=10000,
                        help="cached embeddings in the retrieval timing (queries = pool); 0: no retrieval")
    parser.add_argument("--retrieval_dims", type=int, nargs="+", default=list(RETRIEVAL_DIMS))
    parser.add_argument("--json", type=Path, help="write the results here (atomically)")
    parser.add_argument("--memory-probe", dest="memory_probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.batch, args.shots, args.repeats) < 1 or args.warmup < 0 or args.retrieval_items < 0:
        parser.error("--batch, --shots and --repeats must be >= 1, --warmup and --retrieval_items >= 0")
    if args.retrieval_items and args.retrieval_items <= args.shots:
        parser.error(f"--retrieval_items must exceed --shots ({args.shots}): a query's pool excludes itself")
    if min(args.retrieval_dims) < 1:
        parser.error("--retrieval_dims must be >= 1")
    return args


# ----- models ------------------------------------------------------------------------------------------------------
def build_model(name: str, img_size: int) -> torch.nn.Module:
    return create_model(name, num_classes=NUM_CLASSES, in_chans=IN_CHANS[name], img_size=img_size)


def model_batch(name: str, args, device) -> tuple[dict, torch.Tensor]:
    """A fixed random batch for ``name`` (its input channels) and the query's labels."""
    generator = torch.Generator().manual_seed(0)
    b, k, c, s = args.batch, args.shots, IN_CHANS[name], args.img_size
    batch = {"image": torch.rand(b, c, s, s, generator=generator),
             "support_images": torch.rand(b, k, c, s, s, generator=generator),
             "support_labels": torch.randint(NUM_CLASSES, (b, k, s, s), generator=generator)}
    labels = torch.randint(NUM_CLASSES, (b, s, s), generator=generator)
    return {key: value.to(device) for key, value in batch.items()}, labels.to(device)


def model_workloads(args, device, names) -> dict:
    """{name: (train_step, infer)} in bench_model's form, and each model's parameter count in ``args.params``."""
    workloads, params = {}, {}
    for name in names:
        torch.manual_seed(0)
        model = build_model(name, args.img_size).to(device)
        model.set_grad_checkpointing(args.grad_checkpointing)
        params[name] = sum(p.numel() for p in model.parameters())
        batch, labels = model_batch(name, args, device)
        criterion = model.default_loss()
        workloads[name] = steps_for(model, lambda m, b=batch, y=labels, f=criterion: f(m.forward_batch(b), y),
                                    lambda m, b=batch: m.forward_batch(b), args, device, model_entry(name).recipe)
    args.params = params
    return workloads


def peak_memory_mb(argv: list[str], name: str) -> float:
    """Peak memory of one train step of ``name`` in a child process that builds only that model."""
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--model", name, "--memory-probe"]
    result = subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ})
    return float(result.stdout.strip().splitlines()[-1])


def probe_memory(args, device) -> float:
    """In the child process: build ``args.model``, run one train step, return its peak memory in MiB."""
    train_step, _ = model_workloads(args, device, [args.model])[args.model]
    once = argparse.Namespace(repeats=1, warmup=0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        run_timings(once, device, [args.model], {args.model: (train_step, None)})
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    with RssPeak() as peak:
        run_timings(once, device, [args.model], {args.model: (train_step, None)})
    return peak.growth_mb


# ----- retrieval ---------------------------------------------------------------------------------------------------
def retrieval_embeddings(items: int, dim: int, seed: int = 0) -> np.ndarray:
    """``[items, dim]`` float32 standard-normal stand-ins for cached image embeddings."""
    return np.random.default_rng(seed).standard_normal((items, dim), dtype=np.float32)


def retrieve(embeddings: np.ndarray, k: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The timed operation: every embedding a query against all of them, itself excluded."""
    return topk_supports(embeddings, embeddings, k, same_list=True, device=device)


class _Precomputed(EmbeddingBackend):
    """A backend whose 'images' are already the embedding rows (fills the cache without computing anything)."""

    name = "bench"

    def __init__(self, dim: int):
        self._dim = dim

    def params(self) -> dict:
        return {"dim": self._dim}

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, images) -> np.ndarray:
        return np.stack(images).astype(np.float32)


def verify_topk(embeddings: np.ndarray, indices: torch.Tensor, similarities: torch.Tensor, rows,
                atol: float = 1e-5) -> None:
    """Check rows of a same-list top-k against a float64 brute force: the picks exclude the query, their similarities
    are the reported ones, in descending order, and no other pool item is more similar than the k-th (up to
    ``atol``: float32 rounding may order near-ties differently). Raises AssertionError."""
    unit = embeddings.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    for row in rows:
        picks = indices[row].numpy()
        sims = unit @ unit[row]
        sims[row] = -np.inf
        if row in picks or len(set(picks.tolist())) != len(picks):
            raise AssertionError(f"retrieval row {row}: picks {picks} include the query or repeat")
        if not np.allclose(sims[picks], similarities[row].numpy(), atol=atol):
            raise AssertionError(f"retrieval row {row}: similarities differ from the brute force")
        if np.any(np.diff(sims[picks]) > atol):
            raise AssertionError(f"retrieval row {row}: picks not in descending similarity")
        others = np.delete(sims, picks)
        if others.max() > sims[picks].min() + atol:
            raise AssertionError(f"retrieval row {row}: a more similar pool item was not picked")


def time_retrieval(args, device, dim: int) -> dict:
    """Median seconds of the N x N top-k and of a cache hit for ``dim``-dimensional embeddings."""
    embeddings = retrieval_embeddings(args.retrieval_items, dim)
    backend = _Precomputed(dim)
    files = [f"bench/item_{i:06d}.png" for i in range(len(embeddings))]
    topk, cache, result = [], [], None
    with tempfile.TemporaryDirectory(prefix="bench_matchseg_cache_") as cache_dir:
        cached_embeddings(files, backend, lambda f: embeddings[int(f[-10:-4])], cache_dir)  # a miss: writes it
        for repetition in range(args.warmup + args.repeats):
            synchronize(device)
            start = time.perf_counter()
            result = retrieve(embeddings, args.shots, device)  # returned on the host: the device has finished
            seconds = time.perf_counter() - start
            start = time.perf_counter()
            loaded = cached_embeddings(files, backend, _no_image, cache_dir)  # a hit: _no_image is never called
            load_seconds = time.perf_counter() - start
            if repetition >= args.warmup:
                topk.append(seconds)
                cache.append(load_seconds)
        if not np.array_equal(loaded, embeddings):
            raise AssertionError("the cache returned other embeddings than it was given")
    rows = np.linspace(0, len(embeddings) - 1, min(VERIFIED_ROWS, len(embeddings))).astype(int)
    verify_topk(embeddings, *result, rows)
    return {"topk_s": statistics.median(topk), "cache_load_s": statistics.median(cache),
            "verified_rows": len(rows)}


def _no_image(file: str) -> np.ndarray:
    raise AssertionError(f"cache miss: {file} was loaded")


def run_retrieval(args, device) -> dict:
    return {"device": str(device), "items": args.retrieval_items, "k": args.shots, "same_list": True,
            "dims": {str(dim): time_retrieval(args, device, dim) for dim in args.retrieval_dims}}


# ----- main --------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    device = start_run(args)
    if args.memory_probe:  # child process: one model, print its peak memory in MiB
        print(probe_memory(args, device))
        return None
    names = MODELS if args.model == "both" else (args.model,)
    workloads = model_workloads(args, device, names)
    results = run_timings(args, device, names, workloads)
    for name in names:
        results[name] = {"params": args.params[name], **results[name], "peak_mem_mb": peak_memory_mb(argv, name)}
    report = {"config": run_config(args, device, "params"), **results}
    if len(names) == 2:
        matchseg, universeg = results["matchseg"], results["universeg"]
        report["ratio"] = {key: matchseg[key] / universeg[key] if universeg[key] else None for key in matchseg}
    if args.retrieval_items:
        report["retrieval"] = run_retrieval(args, device)
    report = json_safe(report)
    write_report(report, args.json)
    return report


if __name__ == "__main__":
    main()

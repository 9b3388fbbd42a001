"""Shared fixtures of the contract tests: a tiny configuration of every registered model, tiny phantoms.

Every registered model needs an entry in ``TINY_MODEL_OPTIONS`` (the contract tests fail with a message naming the
model otherwise): small enough for a CPU test, the same architecture otherwise.
"""
from __future__ import annotations

import os

import pytest
import torch

from datasets import get_dataset

TINY_SIZE = 64  # network input of every tiny model (a multiple of 32)
_SIM_MPNET_TINY = dict(scale="pico", img_size=TINY_SIZE, img_size_s2=TINY_SIZE, pool_size=4, feature_dim=16,
                       warmup_iters=2)
_SMP_TINY = dict(img_size=TINY_SIZE, encoder_name="resnet18")
_MATCHSEG_TINY = dict(img_size=TINY_SIZE, widths=(8, 8, 8, 8))  # 4 levels; Joint Attention at <= 32x32 (matchseg*)
TINY_MODEL_OPTIONS: dict[str, dict] = {
    "sim_mpnet": _SIM_MPNET_TINY,
    "sim_mpnet_pico": _SIM_MPNET_TINY,
    "unet": _SMP_TINY,
    "unetplusplus": _SMP_TINY,
    "fpn": _SMP_TINY,
    "matchseg": _MATCHSEG_TINY,
    "matchseg_wide": _MATCHSEG_TINY,
    "universeg": _MATCHSEG_TINY,
}


def pytest_configure(config) -> None:
    """Under pytest-xdist, give each worker its share of the cores (and the scripts it starts, through
    OMP_NUM_THREADS): two workers with a full thread pool each on 2 cores took 8 min 52 s for the suite, with one
    thread each 4 min 54 s (docs/testing.md). An OMP_NUM_THREADS set by the caller is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1 or "OMP_NUM_THREADS" in os.environ:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def tiny_support_set(image: torch.Tensor, num_classes: int, shots: int = 2) -> dict:
    """A fixed random support set for a batch of query images [B, C, H, W]: ``support_images`` [B, k, C, H, W] and
    ``support_labels`` [B, k, H, W] (the same tensors on every call for the same shapes)."""
    generator = torch.Generator().manual_seed(0)
    batch, channels, height, width = image.shape
    return {"support_images": torch.rand(batch, shots, channels, height, width, generator=generator).to(image),
            "support_labels": torch.randint(0, num_classes, (batch, shots, height, width), generator=generator)}


# Models that need context in their batch (a support set): name -> fn(image, num_classes) -> the batch's extra keys.
# The contract tests add it to every batch of these models and call them through forward_batch.
TINY_CONTEXT = {
    "matchseg": tiny_support_set,
    "matchseg_wide": tiny_support_set,
    "universeg": tiny_support_set,
}


def tiny_context(model: str, image: torch.Tensor, num_classes: int) -> dict:
    """The extra batch keys a registered model needs for ``image`` (none for most models)."""
    make = TINY_CONTEXT.get(model)
    return {} if make is None else make(image, num_classes)


# Phantom sizes per option name (each writer takes the ones its PhantomSpec lists).
TINY_PHANTOM = dict(num_train=2, num_valid=1, num_val=1, num_test=1, size=TINY_SIZE, depth=3)


def tiny_options(model: str) -> dict:
    """The tiny configuration of a registered model."""
    if model not in TINY_MODEL_OPTIONS:
        pytest.fail(f"registered model {model!r} has no tiny configuration in tests/conftest.py TINY_MODEL_OPTIONS")
    return dict(TINY_MODEL_OPTIONS[model])


def write_tiny_phantom(dataset: str, root) -> dict:
    """A tiny phantom of a registered data set under ``root`` (as ``python -m datasets.phantoms`` lays it out);
    returns the writer's paths (root_path, volume_path, list_dir, ...)."""
    phantom = get_dataset(dataset).phantom
    if phantom is None:
        pytest.fail(f"registered data set {dataset!r} has no phantom writer: the contract tests need one")
    options = {name: TINY_PHANTOM[name] for name in phantom.options if name in TINY_PHANTOM}
    return phantom.write(root / phantom.dir_name, root / "lists" / phantom.list_dir_name, seed=0, **options)


@pytest.fixture
def single_thread():
    """One intra-op thread for a test module's Sim-MPNet forwards (``pytestmark = pytest.mark.usefixtures(...)``):
    on a small shared CPU, thread oversubscription made them up to ~100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_phantoms(tmp_path_factory):
    """``tiny_phantoms(dataset)``: the tiny phantom of a data set, written once per session."""
    written: dict[str, dict] = {}

    def get(dataset: str) -> dict:
        if dataset not in written:
            written[dataset] = write_tiny_phantom(dataset, tmp_path_factory.mktemp(f"phantom_{dataset}"))
        return written[dataset]

    return get

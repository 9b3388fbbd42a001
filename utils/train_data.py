"""The training data of a run: the augmented training split, one DataLoader per epoch, and load errors carried out of
the worker processes as data.

Everything a batch depends on is a function of (seed, epoch): the shuffle uses a generator seeded by (seed, epoch)
and the dataset's augmentation by (seed, epoch, index), so batches do not depend on the number of workers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from datasets import DatasetSpec, get_dataset
from datasets.errors import DataError
from utils.config import RunOptions
from utils.distributed import GlobalBatchSampler


def build_train_dataset(run: RunOptions, img_size: int) -> torch.utils.data.Dataset:
    """Augmented 2-D training slices (grey sets) or images (RGB sets) of the data set's train split."""
    spec = get_dataset(run.dataset)
    return spec.build(run.root_path, run.list_dir, spec.train_split, run.num_classes, seed=run.seed,
                      transform=spec.train_transform((img_size, img_size)))


@dataclass(frozen=True)
class LoadFailure:
    """A DataError raised while loading an item, carried to the main process as data."""

    path: str
    problem: str


class ErrorsAsData(torch.utils.data.Dataset):
    """Wraps a dataset so that a DataError raised in a worker process reaches the main process intact (the
    DataLoader would re-raise it as a RuntimeError holding the worker's traceback text)."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except DataError as exc:
            return LoadFailure(exc.path, exc.problem)


def collate_or_failure(items: list):
    """default_collate, or the first LoadFailure of the batch."""
    failure = next((item for item in items if isinstance(item, LoadFailure)), None)
    return failure if failure is not None else torch.utils.data.default_collate(items)


def batch_on_device(batch, device: torch.device, dtype: torch.dtype) -> dict:
    """A collated batch of :func:`train_loader` on ``device``, floating tensors in ``dtype`` (the model's); the
    DataError of a file that could not be loaded, raised here in the main process."""
    if isinstance(batch, LoadFailure):
        raise DataError(batch.path, batch.problem)
    return {key: value.to(device, dtype if value.is_floating_point() else None, non_blocking=True)
            if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def train_loader(dataset: torch.utils.data.Dataset, sampler, epoch: int, num_workers: int,
                 device: torch.device) -> DataLoader:
    """DataLoader of one epoch (this rank's share of every global batch); the shuffle and the dataset's
    augmentation set to this epoch. Batches are dicts, or a LoadFailure for a file that could not be loaded."""
    dataset.set_epoch(epoch)
    sampler.set_epoch(epoch)
    return DataLoader(ErrorsAsData(dataset), batch_sampler=sampler, num_workers=num_workers,
                      pin_memory=device.type == "cuda", collate_fn=collate_or_failure)


def make_batch_sampler(spec: DatasetSpec, num_items: int, batch_size: int, seed: int, context,
                       drop_singleton: bool):
    """The data set's own batch sampler (episodes) where it has one, else global shuffled batches."""
    factory = spec.batch_sampler or GlobalBatchSampler
    return factory(num_items, batch_size, context, seed, drop_singleton=drop_singleton)

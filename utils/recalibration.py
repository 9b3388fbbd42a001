"""``recalibrate.py``: a checkpoint's BatchNorm running statistics re-estimated on its training data (PreciseBN).

The training batches are those the run trained on (its recorded data set, paths, augmentation, batch context and
seed; ``--root_path`` / ``--list_dir`` where the files moved). Every weight and every other buffer (memory banks
included) is kept; the new checkpoint is written beside the old one under a new name, never over it. Before and
after, the fit of each layer's running statistics to the inputs it receives in evaluation is printed
(``utils.normalisation``), worst layers first.
"""
from __future__ import annotations

import argparse
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from datasets import get_dataset
from datasets.argtypes import positive_int
from utils.batch_context import model_context, with_training_context
from utils.checkpoint import CheckpointError, build_model_from_checkpoint, save_checkpoint
from utils.cli import HelpFormatter, run_cli
from utils.config import TrainConfig, saved_options
from utils.distributed import DistributedContext
from utils.inference import resolve_device
from utils.model_input import with_model_input
from utils.normalisation import (
    NormalisationFit, batchnorm_layers, format_fit_table, normalisation_fit, recalibrate_batchnorm,
)
from utils.runlog import logger, run_logging, seed_everything
from utils.train_data import batch_on_device, build_train_dataset, make_batch_sampler, train_loader

RECALIBRATED_SUFFIX = "_recalibrated"
DEFAULT_BATCHES = 200  # PreciseBN's finding: a few hundred batches make the estimate as good as the population's


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recalibrate.py", formatter_class=HelpFormatter,
        description="Re-estimate a checkpoint's BatchNorm running statistics on its training data: exact averages "
                    "over N training batches of the evaluation network (PreciseBN), weights and memory unchanged.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by train.py / train_<set>.py")
    parser.add_argument("--output", default=None,
                        help=f"the new checkpoint (default: <checkpoint>{RECALIBRATED_SUFFIX}.pth beside it); an "
                             f"existing file is never replaced")
    parser.add_argument("--num_batches", type=positive_int, default=DEFAULT_BATCHES,
                        help="training batches to average over (fewer when the training split has fewer)")
    parser.add_argument("--batch_size", type=positive_int, default=None, help="default: the run's")
    parser.add_argument("--root_path", default=None, help="the training data (default: the run's)")
    parser.add_argument("--list_dir", default=None, help="the training lists (default: the run's)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--num_workers", type=int, default=0, help="data-loading processes")
    parser.add_argument("--report_only", action="store_true",
                        help="print how the running statistics fit evaluation inputs, write nothing")
    return parser


def output_path(checkpoint: str, output: str | None) -> Path:
    source = Path(checkpoint)
    path = Path(output) if output else source.with_name(source.stem + RECALIBRATED_SUFFIX + source.suffix)
    if path.exists():
        raise ValueError(f"{path}: exists; recalibrate.py never replaces a file (choose --output)")
    return path


def trained_run(ckpt: dict, args: argparse.Namespace, checkpoint: str) -> TrainConfig:
    """The checkpoint's recorded training run, with the data paths given on the command line."""
    trained = saved_options(ckpt)
    run = replace(trained.run, **{key: getattr(args, key) for key in ("root_path", "list_dir")
                                  if getattr(args, key)})
    missing = [f"--{key}" for key in ("dataset", "root_path", "list_dir") if not getattr(run, key)]
    if missing:
        raise CheckpointError(checkpoint, "does not record its training data; name it with " + ", ".join(missing))
    if run.seed is None:
        run = replace(run, seed=0)
    return replace(trained, run=run)


def training_batches(trained: TrainConfig, model: torch.nn.Module, batch_size: int, num_batches: int,
                     device: torch.device, num_workers: int) -> Iterator[dict]:
    """Up to ``num_batches`` augmented training batches on ``device``, as the run's first epochs drew them."""
    run = trained.run
    spec = get_dataset(run.dataset)
    img_size = model.img_size
    dataset = with_training_context(build_train_dataset(run, img_size), trained, img_size, str(device))
    dataset = with_model_input(dataset, spec, model, model_context(model.arch))
    sampler = make_batch_sampler(spec, len(dataset), batch_size, run.seed, DistributedContext(), drop_singleton=True)
    dtype = next(model.parameters()).dtype
    drawn = 0
    for epoch in itertools.count():
        loader = train_loader(dataset, sampler, epoch, num_workers, device)
        if len(loader) == 0:
            raise ValueError(f"{run.list_dir}: the training list gives no batch of {batch_size} items")
        for batch in loader:
            yield batch_on_device(batch, device, dtype)
            drawn += 1
            if drawn == num_batches:
                return


def forward(model: torch.nn.Module, batch: dict):
    return model.forward_batch(batch)


def report(title: str, fits: list[NormalisationFit]) -> None:
    logger.info("%s\n%s", title, format_fit_table(fits))


def recalibrate(args: argparse.Namespace) -> Path | None:
    """The command: report, recalibrate, report, write. Returns the written path (None with --report_only)."""
    device = resolve_device(args.device)
    target = None if args.report_only else output_path(args.checkpoint, args.output)
    model, ckpt = build_model_from_checkpoint(args.checkpoint, map_location="cpu")
    model.to(device)
    if not batchnorm_layers(model):
        raise ValueError(f"{args.checkpoint}: the {model.arch} model has no BatchNorm statistics to recalibrate")
    trained = trained_run(ckpt, args, args.checkpoint)
    batch_size = args.batch_size or (trained.recipe.batch_size if trained.recipe else None)
    if batch_size is None:
        raise CheckpointError(args.checkpoint, "does not record its batch size; give --batch_size")
    seed_everything(trained.run.seed, True)

    def batches() -> Iterator[dict]:  # the same batches on every call: the loader is seeded by (seed, epoch)
        return training_batches(trained, model, batch_size, args.num_batches, device, args.num_workers)

    with run_logging(None):
        report(f"{args.checkpoint}: running statistics vs evaluation inputs, training batches of {batch_size}",
               normalisation_fit(model, batches(), forward))
        if target is None:
            return None
        count = recalibrate_batchnorm(model, batches(), forward)
        report(f"after recalibration on {count} batches", normalisation_fit(model, batches(), forward))
    state = {name: value.cpu() for name, value in model.state_dict().items()}
    record = {"source": os.path.basename(args.checkpoint), "batches": count, "batch_size": batch_size}
    save_checkpoint(target, {**ckpt, "model": state, "batchnorm_recalibration": record})
    print(f"wrote {target}")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(recalibrate, build_parser().parse_args(argv))

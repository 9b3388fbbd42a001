"""Command-line parsers shared by the four scripts, plus the top-level error handler.

One parser builder per role (``build_train_parser`` / ``build_test_parser``) parameterised by the data set. Option
names of the authors' release are kept so that its commands still work; options that mean nothing here are accepted
and ignored with a note (``args.notes``, logged at start). Values that depend on other options (run directory,
resume path, validation list, ...) are resolved right after parsing, so ``parser.parse_args()`` returns final args.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from datasets import DATASET_INFO
from datasets.common import DataError, positive_int
from networks import dataset_constants
from utils.checkpoint import CheckpointError

SCALES = ("pico", "nano", "tiny", "small")
AMP_MODES = ("none", "bf16", "fp16")
METRIC_PROTOCOLS = ("transunet", "strict")
DATASET_TITLES = {"synapse": "Synapse multi-organ CT", "acdc": "ACDC cardiac MRI",
                  "isic2018": "ISIC-2018 skin lesions (dermoscopy)",
                  "segpc2021": "SegPC-2021 multiple-myeloma cells (microscopy)"}

# The release's training recipe (train_synapse.py / trainer.py), used for every data set.
RECIPE = dict(batch_size=20, base_lr=1e-4, max_epochs=300, img_size=256, img_size_s2=224, seed=2222,
              pool_size=100, warmup_iters=2000, wld_start_epoch=100)
TEST_BATCH_SIZE = 16  # slices per inference batch (2-D image sets infer one image at a time)
RUNS_DIR = "runs"
NONE_WORDS = ("none", "null", "")
# Exception types that mean bad input (reported in one line, exit code 2) rather than a bug.
EXPECTED_ERRORS = (DataError, CheckpointError, ValueError, OSError)
# Release options accepted for compatibility that have no effect here, per role, with the reason.
_NO_GPU_COUNT = "one device per process; for several GPUs launch with torchrun --nproc_per_node N"
IGNORED_OPTIONS = {
    "train": {"n_gpu": _NO_GPU_COUNT,
              "max_iterations": "training length is --max_epochs (use --max_steps to stop early)"},
    "test": {"n_gpu": _NO_GPU_COUNT, "max_iterations": "not used for testing",
             "max_epochs": "not used for testing", "base_lr": "not used for testing"},
}


def canonical_dataset(name: str) -> str:
    """'Synapse' -> 'synapse'; raises ValueError for an unknown data set."""
    key = name.lower()
    if key not in DATASET_INFO:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASET_INFO))}")
    return key


def default_run_dir(dataset: str, scale: str, img_size: int) -> str:
    """``runs/<dataset>_<scale>_<img_size>``."""
    return os.path.join(RUNS_DIR, f"{dataset}_{scale}_{img_size}")


def _optional_path(text: str) -> str | None:
    """argparse type: 'none' (any case) -> None, anything else unchanged."""
    return None if text.strip().lower() in NONE_WORDS else text


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except unset ones and those the help text already explains."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _DatasetParser(argparse.ArgumentParser):
    """ArgumentParser that resolves dependent defaults right after parsing (see the module docstring)."""

    def __init__(self, dataset: str, role: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dataset = dataset
        self.role = role

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extras = super().parse_known_args(args, namespace)
        try:
            _resolve(parsed, self.dataset, self.role)
        except ValueError as exc:
            self.error(str(exc))
        return parsed, extras


def _add_release_compat(parser: argparse.ArgumentParser, dataset: str, role: str) -> None:
    group = parser.add_argument_group("options of the authors' release (accepted for compatibility)")
    group.add_argument("--dataset", default=None,
                       help=f"data set name; must name this script's data set ({dataset}) if given")
    group.add_argument("--deterministic", type=int, default=1,
                       help="1: deterministic cuDNN kernels (benchmark off); 0: cuDNN autotuning")
    for name, why in IGNORED_OPTIONS[role].items():
        group.add_argument(f"--{name}", type=float if name == "base_lr" else int, default=None, help="ignored: " + why)


def _add_data_options(parser: argparse.ArgumentParser, dataset: str, role: str) -> None:
    info = DATASET_INFO[dataset]
    constants = dataset_constants(dataset)
    group = parser.add_argument_group("data")
    if role == "train":
        group.add_argument("--root_path", default=info["root_path"], help="directory of the training images/slices")
    group.add_argument("--volume_path", default=info["volume_path"],
                       help="directory of the test/validation images/volumes")
    group.add_argument("--list_dir", default=info["list_dir"], help="directory of the list files")
    group.add_argument("--num_classes", type=positive_int, default=constants["num_classes"],
                       help="classes including background")
    if role == "train":
        group.add_argument("--num_workers", type=_non_negative_int, default=min(4, os.cpu_count() or 1),
                           help="DataLoader worker processes (0: load in the main process)")
        group.add_argument("--val_list", type=_optional_path, default=DATASET_INFO[dataset]["val_split"],
                           help="list (in --list_dir) of images/volumes evaluated during training; 'none' disables")
        group.add_argument("--val_every", type=positive_int, default=1, help="validate every N epochs")
    else:
        group.add_argument("--test_list", default=info["test_split"],
                           help="list (in --list_dir) of test images/volumes")


def _add_model_options(parser: argparse.ArgumentParser, dataset: str, role: str) -> None:
    """Architecture options. For testing they default to None = 'as stored in the checkpoint'."""
    constants = dataset_constants(dataset)
    train = role == "train"
    from_ckpt = "default: as stored in the checkpoint; a different value is an error"
    group = parser.add_argument_group("model")
    group.add_argument("--scale", choices=SCALES, default="small" if train else None,
                       help="MaxViT/DMW-LA size" + ("" if train else f" ({from_ckpt})"))
    group.add_argument("--img_size", type=positive_int, default=RECIPE["img_size"] if train else None,
                       help="input size of the network (multiple of 32)" + ("" if train else f" ({from_ckpt})"))
    group.add_argument("--img_size_s2", type=positive_int, default=RECIPE["img_size_s2"] if train else None,
                       help="input size of the second encoder (multiple of 32)")
    group.add_argument("--num_k", type=positive_int, default=constants["num_k"] if train else None,
                       help="memory clusters per DMW-LA layer")
    group.add_argument("--feature_dim", type=positive_int, default=constants["feature_dim"] if train else None,
                       help="memory feature dimension")
    group.add_argument("--pool_size", type=positive_int, default=RECIPE["pool_size"] if train else None,
                       help="memory columns per cluster (M)")
    group.add_argument("--warmup_iters", type=_non_negative_int, default=RECIPE["warmup_iters"] if train else None,
                       help="training forwards that fill the memory bank before it is clustered")
    if train:
        group.add_argument("--pretrained", default=None,
                           help="ImageNet weights for the MaxViT encoder: a path, or 'none' for random init "
                                "(default: the standard file under pretrained_pth/maxvit)")


def _add_runtime_options(parser: argparse.ArgumentParser, role: str) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (auto: CUDA when present)")
    group.add_argument("--amp", choices=AMP_MODES, default="none",
                       help="mixed precision: bf16, or fp16 (with gradient scaling when training)")
    group.add_argument("--seed", type=int, default=RECIPE["seed"], help="random seed")
    group.add_argument("--batch_size", "--batch-size", dest="batch_size", type=positive_int,
                       default=RECIPE["batch_size"] if role == "train" else TEST_BATCH_SIZE,
                       help="images/slices per training batch" if role == "train"
                       else "slices per inference batch (2-D image sets: one image at a time)")
    if role == "train":
        group.add_argument("--compile", action="store_true", help="torch.compile the model")
        group.add_argument("--grad_checkpointing", action="store_true",
                           help="recompute encoder 1's MaxViT blocks in backward instead of storing them: less "
                                "GPU memory (see README), one more MaxViT forward per step; same gradients")
        group = parser.add_argument_group("multi-GPU (torchrun --nproc_per_node N ...; --batch_size is the global "
                                          "batch, split equally over the N processes)")
        group.add_argument("--sync_bn", type=int, choices=(0, 1), default=1,
                           help="1: BatchNorm statistics over the global batch (as one process); 0: per process, "
                                "running statistics averaged every epoch")
        group.add_argument("--check_replicas", type=_non_negative_int, default=0, metavar="N",
                           help="every N steps, verify that all processes hold bit-identical weights and memory "
                                "banks (0: never; a debugging aid that costs one pass over the state)")


def build_train_parser(dataset: str) -> argparse.ArgumentParser:
    """Parser of ``train_<dataset>.py``."""
    dataset = canonical_dataset(dataset)
    parser = _DatasetParser(dataset, "train", formatter_class=_HelpFormatter,
                            description=f"Train Sim-MPNet on {DATASET_TITLES.get(dataset, dataset)}.")
    _add_data_options(parser, dataset, "train")
    _add_model_options(parser, dataset, "train")
    group = parser.add_argument_group("optimisation")
    group.add_argument("--base_lr", type=float, default=RECIPE["base_lr"], help="AdamW learning rate (constant)")
    group.add_argument("--max_epochs", type=positive_int, default=RECIPE["max_epochs"], help="training epochs")
    group.add_argument("--max_steps", type=positive_int, default=None,
                       help="stop after this many optimizer steps (smoke tests)")
    group.add_argument("--wld_start_epoch", type=_non_negative_int, default=RECIPE["wld_start_epoch"],
                       help="first epoch of W-LD's adaptive memory K")
    _add_runtime_options(parser, "train")
    group = parser.add_argument_group("output")
    group.add_argument("--output_dir", default=None,
                       help=f"run directory (default: {RUNS_DIR}/<dataset>_<scale>_<img_size>)")
    group.add_argument("--resume", default=None,
                       help="checkpoint to continue from, or 'auto' = <output_dir>/last.pth when it exists")
    group.add_argument("--select_best_on_test", action="store_true",
                       help="the release's model selection, for reproduction only: evaluate the TEST list every "
                            "epoch from --wld_start_epoch on and keep best.pth")
    _add_release_compat(parser, dataset, "train")
    return parser


def build_test_parser(dataset: str) -> argparse.ArgumentParser:
    """Parser of ``test_<dataset>.py``."""
    dataset = canonical_dataset(dataset)
    parser = _DatasetParser(dataset, "test", formatter_class=_HelpFormatter,
                            description=f"Evaluate Sim-MPNet on {DATASET_TITLES.get(dataset, dataset)}.")
    _add_data_options(parser, dataset, "test")
    parser.add_argument("--checkpoint", default=None,
                        help=f"checkpoint to evaluate (default: {RUNS_DIR}/<dataset>_<scale>_<img_size>/last.pth)")
    _add_model_options(parser, dataset, "test")
    _add_runtime_options(parser, "test")
    parser.add_argument("--metrics", choices=METRIC_PROTOCOLS, default="transunet",
                        help="transunet: the protocol of published numbers; strict: missing organs are NaN")
    group = parser.add_argument_group("output")
    group.add_argument("--output_dir", default=None,
                       help="where metrics.csv / summary.json go (default: <checkpoint dir>/test)")
    group.add_argument("--is_savenii", action="store_true",
                       help="write image/prediction/label NIfTI per case (volume data sets only)")
    group.add_argument("--test_save_dir", default=None, help="NIfTI directory (default: <output_dir>/predictions)")
    group.add_argument("--save-overlays", "--save_overlays", dest="save_overlays", type=_non_negative_int, default=0,
                       metavar="N", help="PNG overlays (ground truth | prediction) of the N slices per case with "
                                         "the most foreground (2-D image sets: one per image when N >= 1), in "
                                         "<output_dir>/overlays")
    _add_release_compat(parser, dataset, "test")
    return parser


def _resolve(args: argparse.Namespace, dataset: str, role: str) -> None:
    """Fill defaults that depend on other options; collect notes about ignored options."""
    if args.dataset is not None and args.dataset.lower() != dataset:
        raise ValueError(f"--dataset {args.dataset} contradicts this script, which handles {dataset}")
    args.dataset = dataset
    args.class_names = list(DATASET_INFO[dataset]["class_names"])
    args.notes = [f"--{name} {getattr(args, name)} ignored: {why}" for name, why in IGNORED_OPTIONS[role].items()
                  if getattr(args, name) is not None]
    if role == "train":
        args.output_dir = args.output_dir or default_run_dir(dataset, args.scale, args.img_size)
        if args.resume is not None and args.resume.lower() == "auto":
            last = Path(args.output_dir) / "last.pth"
            args.resume = str(last) if last.is_file() else None
            args.notes.append(f"--resume auto: continuing from {last}" if args.resume
                              else f"--resume auto: no {last}, starting fresh")
        if args.pretrained is not None and args.pretrained.strip().lower() in NONE_WORDS:
            args.pretrained = False
    else:
        args.checkpoint = args.checkpoint or os.path.join(
            default_run_dir(dataset, args.scale or "small", args.img_size or RECIPE["img_size"]), "last.pth")
        args.output_dir = args.output_dir or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "test")
        args.test_save_dir = args.test_save_dir or os.path.join(args.output_dir, "predictions")


def report_error(exc: BaseException) -> str:
    """One line ``error: <file>: <problem>`` for an expected (input) error."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = str(exc)
    return "error: " + " ".join(text.split())


def run_cli(entry: Callable[[argparse.Namespace], object], args: argparse.Namespace) -> int:
    """Run ``entry(args)``; bad input becomes one ``error: ...`` line on stderr and exit code 2."""
    try:
        entry(args)
    except EXPECTED_ERRORS as exc:
        sys.stdout.flush()
        print(report_error(exc), file=sys.stderr)
        return 2
    return 0


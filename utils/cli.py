"""Command-line parsers of the train/test scripts, built from the registries, plus the top-level error handler.

One parser builder per role (``build_train_parser`` / ``build_test_parser``): ``train.py`` / ``test.py`` take
``--model NAME --dataset NAME``; ``train_<dataset>.py`` / ``test_<dataset>.py`` are the same with the data set fixed.
The model's options are declared once, by its family's config dataclass (fields with ``cli_option`` metadata) and
training options (``train_options_class``): the parser reads ``--model`` (and ``--dataset``) first, then adds that
family's options; the optimisation options are the fields of ``networks.recipe.TrainingRecipe``, with the
model's recipe as defaults. Option names of the authors' release are kept so that its commands still work; options
that mean nothing here are accepted and ignored with a note (``notes``, logged at start). Values that depend on other
options (run directory, resume path, validation list, ...) are resolved right after parsing. ``parse_config`` returns
the typed :class:`utils.config.TrainConfig` / :class:`utils.config.EvalConfig` that the library takes.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from datasets import get_dataset, list_datasets
from datasets.argtypes import non_negative_int, positive_int
from datasets.registry import DISTANCE_UNITS
from datasets.errors import DataError
from datasets.episodes.providers import get_context
from networks import list_models, model_entry
from networks.recipe import TrainingRecipe
from networks.registry import model_config
from utils.checkpoint import CheckpointError, peek_arch
from utils.config import EvalConfig, RunOptions, TrainConfig, config_from_namespace
from utils.inference import TTA_MODES
from utils.replay import config_defaults, config_selection
from utils.runfolder import RunInterrupted, SignalStop
from utils.runlog import error_line
from utils.run_defaults import checkpoint_defaults

DEFAULT_MODEL = "sim_mpnet"
AMP_MODES = ("none", "bf16", "fp16")
METRIC_PROTOCOLS = ("transunet", "strict")

DEFAULT_SEED = 2222  # the release's (train_synapse.py); the rest of a training recipe is the model's (networks.recipe)
TEST_BATCH_SIZE = 16  # slices per inference batch (2-D image sets infer one image at a time)
RUNS_DIR = "runs"
NONE_WORDS = ("none", "null", "")
# Exception types that mean bad input (reported in one line, exit code 2) rather than a bug.
EXPECTED_ERRORS = (DataError, CheckpointError, ValueError, OSError, FloatingPointError)  # the last: divergence
# Release options accepted for compatibility that have no effect here, per role, with the reason.
_NO_GPU_COUNT = "one device per process; for several GPUs launch with torchrun --nproc_per_node N"
IGNORED_OPTIONS = {
    "train": {"n_gpu": _NO_GPU_COUNT,
              "max_iterations": "training length is --max_epochs (use --max_steps to stop early)"},
    "test": {"n_gpu": _NO_GPU_COUNT, "max_iterations": "not used for testing",
             "max_epochs": "not used for testing", "base_lr": "not used for testing"},
}
_ARGPARSE_TYPES = {"int": int, "float": float, "str": str, "int | None": int, "str | None": str,
                   "tuple[int, ...]": int}  # a tuple field takes one or more values (--widths 32 32 32 32)


def canonical_dataset(name: str) -> str:
    """'Synapse' -> 'synapse'; raises ValueError for an unknown data set."""
    return get_dataset(name).name


def dataset_argument(text: str) -> str:
    """argparse type of a ``--dataset`` value: a registered name or a prepared own data set's folder, as the
    registry names it (a folder: its absolute path)."""
    try:
        return canonical_dataset(text)
    except (ValueError, DataError) as exc:
        raise argparse.ArgumentTypeError(" ".join(str(exc).split())) from exc


def default_run_dir(dataset: str, tag: str, img_size: int) -> str:
    """``runs/<dataset>_<tag>_<img_size>`` (an own data set: its folder's name); the tag is the model's scale where
    it has one (the release's naming, e.g. ``runs/synapse_small_256``), else the model's name."""
    return os.path.join(RUNS_DIR, f"{get_dataset(dataset).short_name}_{tag}_{img_size}")


def _optional_path(text: str) -> str | None:
    """argparse type: 'none' (any case) -> None, anything else unchanged."""
    return None if text.strip().lower() in NONE_WORDS else text


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except unset ones and those the help text already explains."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class RunParser(argparse.ArgumentParser):
    """Parser of one role ('train' or 'test'). It reads ``--model`` / ``--dataset`` first, adds the data set's and
    the model family's options, and resolves dependent defaults right after parsing (see the module docstring)."""

    def __init__(self, role: str, dataset: str | None, **kwargs) -> None:
        super().__init__(formatter_class=HelpFormatter, **kwargs)
        self.role, self.fixed_dataset = role, dataset
        self.model_option_names: list[str] = []
        self.train_option_names: list[str] = []
        self.context_option_names: list[str] = []
        self._built = False
        self.checkpoint_path: str | None = None
        self.config_path: str | None = None  # --config: a run's config.json (utils.replay)

    def _selection(self, argv: Sequence[str]) -> tuple[str, str | None]:
        """(data set, model) named on the command line (the model may be None for testing: the checkpoint's)."""
        first = argparse.ArgumentParser(add_help=False)
        first.add_argument("--dataset", default=None)
        first.add_argument("--model", default=None)
        first.add_argument("--checkpoint", default=None)
        first.add_argument("--config", default=None)
        known, _ = first.parse_known_args(argv)
        self.config_path = known.config
        if known.config:  # a run's record: its data set, model (training) and checkpoint (testing) unless given
            try:
                recorded = config_selection(known.config, self.role)
            except DataError as exc:
                self.error(str(exc))
            known.dataset = known.dataset or (None if self.fixed_dataset else recorded.get("dataset"))
            known.model = known.model or recorded.get("model")
            known.checkpoint = known.checkpoint or recorded.get("checkpoint")
        dataset = self.fixed_dataset
        if dataset is None and known.dataset is None and self.role == "test":
            known.dataset = checkpoint_defaults(known.checkpoint, None).get("dataset")  # the run's data set
        if dataset is None:
            if known.dataset is None:
                why = "" if not known.checkpoint else " (the checkpoint records none)" \
                    if os.path.isfile(known.checkpoint) else f" ({known.checkpoint}: no such file)"
                self.error(f"--dataset is required{why}; registered: {', '.join(list_datasets())}")
            dataset = known.dataset
        elif known.dataset is not None and known.dataset.lower() != dataset:
            self.error(f"--dataset {known.dataset} contradicts this script, which handles {dataset}")
        try:
            dataset = canonical_dataset(dataset)
            model = known.model
            if model is None and self.role == "test" and known.checkpoint:
                model = peek_arch(known.checkpoint)  # the family whose options the checkpoint can be checked with
            model = model or DEFAULT_MODEL
            model_entry(model)
        except (ValueError, DataError) as exc:  # DataError: a prepared folder's descriptor that cannot be read
            self.error(str(exc))
        self.checkpoint_path = known.checkpoint
        return dataset, model

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        if not self._built:
            if self.fixed_dataset is None and not any(name in " ".join(argv) for name in ("--dataset", "--config")) \
                    and {"-h", "--help"} & set(argv) \
                    and not (self.role == "test" and "--checkpoint" in " ".join(argv)):
                _add_selection_help(self)  # options depend on the model and data set: say how to list them
            else:
                _build(self, *self._selection(argv))
            self._built = True
        parsed, extras = super().parse_known_args(argv, namespace)
        try:
            _resolve(self, parsed)
        except ValueError as exc:
            self.error(str(exc))
        return parsed, extras

    def parse_config(self, args: Sequence[str] | None = None) -> TrainConfig | EvalConfig:
        """The typed run configuration of the command line."""
        parsed = self.parse_args(args)
        model_options = {name: getattr(parsed, name) for name in self.model_option_names}
        context_options = {name: getattr(parsed, name) for name in self.context_option_names}
        if self.role == "train":
            train_options = {name: getattr(parsed, name) for name in self.train_option_names}
            return TrainConfig(run=config_from_namespace(RunOptions, parsed), model_options=model_options,
                               train_options=train_options, context_options=context_options,
                               recipe=config_from_namespace(TrainingRecipe, parsed))
        return config_from_namespace(EvalConfig, parsed, model_options=model_options,
                                     context_options=context_options)


def _add_selection_help(parser: RunParser) -> None:
    parser.add_argument("--dataset", required=True, choices=list_datasets(), help="registered data set")
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=list_models(), help="registered model")
    parser.epilog = "The other options depend on the model and data set: add --dataset NAME [--model NAME] to --help."


def _build(parser: RunParser, dataset: str, model: str) -> None:
    parser.dataset, parser.model = dataset, model
    _add_data_options(parser, dataset, parser.role)
    if parser.role == "test":
        parser.add_argument("--checkpoint", default=None,
                            help=f"checkpoint to evaluate (default: {RUNS_DIR}/<dataset>_<scale>_<img_size>/last.pth)")
    _add_model_options(parser, dataset, model, parser.role)
    if parser.role == "train":
        group = parser.add_argument_group(f"optimisation (defaults: the training recipe of {model})")
        add_dataclass_options(group, dataclasses.fields(TrainingRecipe), model_entry(model).recipe)
        group.add_argument("--max_steps", type=positive_int, default=None,
                           help="stop after this many optimizer steps (smoke tests)")
        _add_train_options(parser, model)
    _add_context_options(parser, model, parser.role)
    _add_runtime_options(parser, parser.role)
    if parser.role == "train":
        group = parser.add_argument_group("output")
        group.add_argument("--output_dir", default=None,
                           help=f"run directory (default: {RUNS_DIR}/<dataset>_<scale or model>_<img_size>)")
        group.add_argument("--resume", default=None,
                           help="checkpoint to continue from, or 'auto' = <output_dir>/last.pth when it exists")
        group.add_argument("--select_best_on_test", action="store_true",
                           help="the release's model selection, for reproduction only: evaluate the TEST list every "
                                "epoch from the model's first selection epoch (Sim-MPNet: --wld_start_epoch) on and "
                                "keep best.pth")
    else:
        parser.add_argument("--metrics", choices=METRIC_PROTOCOLS, default="transunet",
                            help="transunet: the protocol of published numbers; strict: missing organs are NaN")
        parser.add_argument("--distance_unit", choices=DISTANCE_UNITS, default=None,
                            help=f"unit of HD95 and ASD: pixel (voxel steps, the benchmark papers' protocol) or mm "
                                 f"(from the voxel spacing of sets that have one) (default: the data set's, "
                                 f"{get_dataset(dataset).distance_unit})")
        group = parser.add_argument_group("output")
        group.add_argument("--output_dir", default=None,
                           help="where metrics.csv / summary.json go (default: <checkpoint dir>/test)")
        group.add_argument("--is_savenii", action="store_true",
                           help="write image/prediction/label NIfTI per case (volume data sets only)")
        group.add_argument("--test_save_dir", default=None,
                           help="NIfTI directory (default: <output_dir>/predictions)")
        group.add_argument("--save-overlays", "--save_overlays", dest="save_overlays", type=non_negative_int,
                           default=0, metavar="N",
                           help="PNG overlays (ground truth | prediction) of the N slices per case with the most "
                                "foreground (2-D image sets: one per image when N >= 1), in <output_dir>/overlays")
    _add_release_compat(parser, dataset, parser.role)
    if parser.role == "test":  # what the checkpoint's run recorded is the default; an option given overrides it
        parser.set_defaults(**checkpoint_defaults(parser.checkpoint_path, dataset))
    parser.add_argument("--config", default=None, metavar="CONFIG_JSON",
                        help="a run's config.json: its options are the defaults (training: the run replayed; testing: "
                             "its data and last.pth); options given here override them")
    parser.set_defaults(**config_defaults(parser.config_path, parser.role, dataset,
                                          {action.dest for action in parser._actions}))


def _add_release_compat(parser: argparse.ArgumentParser, dataset: str, role: str) -> None:
    group = parser.add_argument_group("selection, and options of the authors' release (accepted for compatibility)")
    group.add_argument("--model", default=None, choices=list_models(),
                       help=f"registered model (default: {DEFAULT_MODEL}" +
                            ("" if role == "train" else "; testing: the checkpoint's") + ")")
    group.add_argument("--dataset", default=None, help=f"data set name (this run: {dataset})")
    group.add_argument("--deterministic", type=int, default=1,
                       help="1: deterministic cuDNN kernels (benchmark off); 0: cuDNN autotuning")
    for name, why in IGNORED_OPTIONS[role].items():
        group.add_argument(f"--{name}", type=float if name == "base_lr" else int, default=None, help="ignored: " + why)


def _add_data_options(parser: argparse.ArgumentParser, dataset: str, role: str) -> None:
    spec = get_dataset(dataset)
    group = parser.add_argument_group(f"data ({spec.title})")
    if role == "train":
        group.add_argument("--root_path", default=spec.root_path, help="directory of the training images/slices")
    recorded = "" if role == "train" else "; testing: the checkpoint's run's, on its data set"
    group.add_argument("--volume_path", default=spec.volume_path,
                       help="directory of the test/validation images/volumes" + recorded)
    group.add_argument("--list_dir", default=spec.list_dir, help="directory of the list files" + recorded)
    group.add_argument("--num_classes", type=positive_int, default=spec.num_classes,
                       help="classes including background" + recorded)
    if role == "train":
        group.add_argument("--num_workers", type=non_negative_int, default=min(4, os.cpu_count() or 1),
                           help="DataLoader worker processes (0: load in the main process)")
        group.add_argument("--val_list", type=_optional_path, default=spec.val_split,
                           help="list (in --list_dir) of images/volumes evaluated during training; 'none' disables")
        group.add_argument("--val_every", type=positive_int, default=1, help="validate every N epochs")
    else:
        group.add_argument("--test_list", default=spec.test_split, help="list (in --list_dir) of test images/volumes")


def _option_type(item: dataclasses.Field) -> Callable[[str], Any]:
    kind = _ARGPARSE_TYPES[str(item.type)]
    if kind is int:
        return non_negative_int if item.metadata.get("minimum") == 0 else positive_int
    return kind


def add_dataclass_options(group, fields: Sequence[dataclasses.Field], defaults: Any, suffix: str = "",
                           role: str | None = None) -> list[str]:
    """``--<field>`` for every field with cli_option metadata (and, when the metadata names a role, of ``role``);
    returns their names."""
    names = []
    for item in fields:
        if "help" not in item.metadata or item.metadata.get("role", role) != role:
            continue
        group.add_argument(f"--{item.name}", *item.metadata.get("aliases", ()), dest=item.name,
                           type=_option_type(item), choices=item.metadata.get("choices"),
                           nargs="+" if str(item.type).startswith("tuple[") else None,
                           default=None if defaults is None else getattr(defaults, item.name),
                           help=item.metadata["help"] + suffix)
        names.append(item.name)
    return names


def _add_model_options(parser: RunParser, dataset: str, model: str, role: str) -> None:
    """The family's architecture options. For testing they default to None = 'as stored in the checkpoint'."""
    entry = model_entry(model)
    spec = get_dataset(dataset)
    train = role == "train"
    defaults = model_config(model, dataset=dataset, num_classes=spec.num_classes, in_chans=spec.in_chans) \
        if train else None
    suffix = "" if train else " (default: as stored in the checkpoint; a different value is an error)"
    group = parser.add_argument_group(f"model: {model} ({entry.description})")
    parser.model_option_names = add_dataclass_options(group, dataclasses.fields(entry.config_class), defaults,
                                                       suffix)
    if train:
        group.add_argument("--in_chans", type=positive_int, choices=sorted({1, spec.in_chans}), default=None,
                           help=f"input channels of the model (default: the data set's, {spec.in_chans}); 1 on a "
                                f"colour data set trains a grey model, the images converted to grey (luma)")
        group.add_argument("--pretrained", default=None,
                           help="local weights for the model's pretrained part (Sim-MPNet: the ImageNet MaxViT; "
                                "smp baselines: the encoder), or 'none' for random init (default: the family's "
                                "standard file where it has one; nothing is downloaded)")


def _add_train_options(parser: RunParser, model: str) -> None:
    """The family's training options (e.g. Sim-MPNet's --wld_start_epoch)."""
    options_class = model_entry(model).train_options
    if options_class is None:
        return
    group = parser.add_argument_group(f"training schedule of {model}")
    parser.train_option_names = add_dataclass_options(group, dataclasses.fields(options_class), options_class())


def _add_context_options(parser: RunParser, model: str, role: str) -> None:
    """The options of the model's batch context (e.g. support sets). For testing they default to None = the
    training run's values (stored in the checkpoint)."""
    context = model_entry(model).context
    if context is None:
        return
    provider = get_context(context)
    train = role == "train"
    group = parser.add_argument_group(f"batch context: {context} ({provider.description})")
    parser.context_option_names = add_dataclass_options(
        group, dataclasses.fields(provider.options), provider.options() if train else None,
        "" if train else " (default: as in the training run)", role)


def _add_runtime_options(parser: argparse.ArgumentParser, role: str) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (auto: CUDA when present)")
    group.add_argument("--amp", choices=AMP_MODES, default="none",
                       help="mixed precision: bf16, or fp16 (with gradient scaling when training)")
    group.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    if role == "test":  # training: an option of the recipe (optimisation)
        group.add_argument("--batch_size", "--batch-size", dest="batch_size", type=positive_int,
                           default=TEST_BATCH_SIZE, help="slices per inference batch (2-D image sets: one image at a "
                                                         "time)")
    if role == "test":
        group.add_argument("--tta", choices=TTA_MODES, default="none",
                           help="test-time augmentation: flip = average the softmax probabilities over the input and "
                                "its mirror images (vertical, horizontal, both): 4 forwards per slice/image")
    if role == "train":
        group.add_argument("--compile", action="store_true", help="torch.compile the model")
        group.add_argument("--grad_checkpointing", action="store_true",
                           help="recompute activations in backward instead of storing them (Sim-MPNet: encoder 1's "
                                "MaxViT blocks): less GPU memory (see docs/training.md), one more forward per step; "
                                "same gradients")
        group = parser.add_argument_group("multi-GPU (torchrun --nproc_per_node N ...; --batch_size is the global "
                                          "batch, split equally over the N processes)")
        group.add_argument("--sync_bn", type=int, choices=(0, 1), default=1,
                           help="1: BatchNorm statistics over the global batch (as one process); 0: per process, "
                                "running statistics averaged every epoch")
        group.add_argument("--check_replicas", type=non_negative_int, default=0, metavar="N",
                           help="every N steps, verify that all processes hold bit-identical weights and memory "
                                "banks (0: never; a debugging aid that costs one pass over the state)")


def build_train_parser(dataset: str | None = None) -> RunParser:
    """Parser of ``train_<dataset>.py`` (``dataset`` fixed) or of ``train.py`` (``--dataset`` required)."""
    title = get_dataset(dataset).title if dataset else "a registered data set"
    return RunParser("train", canonical_dataset(dataset) if dataset else None,
                     description=f"Train a segmentation model (default {DEFAULT_MODEL}) on {title}.")


def build_test_parser(dataset: str | None = None) -> RunParser:
    """Parser of ``test_<dataset>.py`` (``dataset`` fixed) or of ``test.py`` (``--dataset`` required)."""
    title = get_dataset(dataset).title if dataset else "a registered data set"
    return RunParser("test", canonical_dataset(dataset) if dataset else None,
                     description=f"Evaluate a checkpoint on {title}.")


def _run_tag(parser: RunParser, args: argparse.Namespace) -> tuple[str, int]:
    """(scale or model name, img_size) of the run directory's name."""
    if parser.role == "train":
        return getattr(args, "scale", None) or parser.model, args.img_size
    defaults = model_config(parser.model, dataset=parser.dataset, num_classes=args.num_classes)
    tag = getattr(args, "scale", None) or getattr(defaults, "scale", None) or parser.model
    return tag, getattr(args, "img_size", None) or defaults.img_size


def _resolve(parser: RunParser, args: argparse.Namespace) -> None:
    """Fill defaults that depend on other options; collect notes about ignored options."""
    role, dataset = parser.role, parser.dataset
    args.dataset, args.model = dataset, parser.model
    args.class_names = list(get_dataset(dataset).class_names)
    args.notes = [f"--{name} {getattr(args, name)} ignored: {why}" for name, why in IGNORED_OPTIONS[role].items()
                  if getattr(args, name) is not None]
    if role == "train":
        # an impossible recipe value (--base_lr 0, --weight_decay -1) is one error line, before anything runs
        TrainingRecipe(**{item.name: getattr(args, item.name) for item in dataclasses.fields(TrainingRecipe)})
        args.output_dir = args.output_dir or default_run_dir(dataset, *_run_tag(parser, args))
        if args.resume is not None and args.resume.lower() == "auto":
            last = Path(args.output_dir) / "last.pth"
            args.resume = str(last) if last.is_file() else None
            args.notes.append(f"--resume auto: continuing from {last}" if args.resume
                              else f"--resume auto: no {last}, starting fresh")
        if args.pretrained is not None and args.pretrained.strip().lower() in NONE_WORDS:
            args.pretrained = False
    else:
        args.checkpoint = args.checkpoint or os.path.join(default_run_dir(dataset, *_run_tag(parser, args)),
                                                          "last.pth")
        args.output_dir = args.output_dir or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "test")
        args.test_save_dir = args.test_save_dir or os.path.join(args.output_dir, "predictions")


def report_error(exc: BaseException) -> str:
    """One line ``error: <file>: <problem>`` for an expected (input) error."""
    return "error: " + error_line(exc)


def run_cli(entry: Callable[[Any], object], args: Any) -> int:
    """Run ``entry(args)``; bad input becomes one ``error: ...`` line on stderr and exit code 2, SIGTERM / SIGINT
    one line and exit code 128 + the signal (utils.runfolder.RunInterrupted), never a traceback."""
    try:
        with SignalStop.installed():
            entry(args)
    except EXPECTED_ERRORS as exc:
        sys.stdout.flush()
        print(report_error(exc), file=sys.stderr)
        return 2
    except RunInterrupted as stop:
        sys.stdout.flush()
        print(stop, file=sys.stderr)
        return stop.exit_code
    return 0


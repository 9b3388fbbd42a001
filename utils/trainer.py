"""Training loop of Sim-MPNet (both data sets), reproducing the authors' release by default.

Release recipe: AdamW (lr 1e-4, weight decay 1e-4) at a constant learning rate, batch 20, 300 epochs, MultiHeadLoss
(0.3 CE + 0.7 Dice over the 15 non-empty subsets of the 4 heads), and W-LD from epoch 100: after every optimizer
step the memory's K follows ``networks.wld.next_memory_k(previous_loss, loss, pool_size)``.

Everything that influences the run is a function of (seed, epoch): the shuffle uses a generator seeded by
(seed, epoch) and the dataset's augmentation by (seed, epoch, index), so results do not depend on the number of
workers, and ``last.pth`` (written every epoch) holds everything needed for a resumed run to end in exactly the state
of an uninterrupted one.

Under torchrun the same loop runs data-parallel (see utils.distributed): ``--batch_size`` stays the global batch,
rank 0 alone logs, validates (with the other ranks' share of the volumes) and writes files.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from datasets import DATASET_INFO, build_dataset, build_train_transform
from datasets.common import DataError
from networks import SimMPNet, model_summary
from networks.wld import next_memory_k
from utils.checkpoint import (CheckpointError, atomic_write_json, capture_rng_state, check_model_config, json_safe,
                              load_checkpoint, load_model_state, restore_rng_state, save_checkpoint)
from utils.distributed import (GlobalBatchSampler, average_batchnorm_statistics, check_replicas_identical,
                               convert_to_global_batchnorm, gather_objects, mean_over_ranks, setup_distributed,
                               teardown_distributed, wrap_data_parallel)
from utils.evaluator import build_eval_dataset, data_kind, evaluate_model, gt_pred_panel
from utils.losses import MultiHeadLoss
from utils.metrics import summarize
from utils.runlog import (CreatedPaths, CsvLog, TensorBoard, amp_dtype, logger, removed_on_failure, run_logging,
                          seed_everything)

WEIGHT_DECAY = 1e-4  # release: AdamW(weight_decay=0.0001)
LOG_EVERY_STEPS = 50  # release logs the loss every 50 iterations
LAST_CHECKPOINT = "last.pth"
BEST_VAL_CHECKPOINT = "best_val.pth"
BEST_TEST_CHECKPOINT = "best.pth"  # --select_best_on_test (release behaviour)
STEP_LOG_COLUMNS = ("step", "epoch", "loss", "lr", "memory_k")  # train_steps.csv
EPOCH_LOG_COLUMNS = ("epoch", "mean_loss", "val_dice", "val_hd95", "seconds")  # epochs.csv
# Arguments whose change between the original and a resumed run breaks exact continuation (logged as a warning).
RESUME_SENSITIVE_ARGS = ("seed", "batch_size", "base_lr", "wld_start_epoch", "root_path", "list_dir", "amp")


@dataclass
class TrainState:
    """Loop counters saved in every checkpoint."""

    next_epoch: int = 0
    global_step: int = 0
    wld_previous_loss: float | None = None
    best_val_dice: float = -math.inf
    best_test_dice: float = -math.inf


# ----------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------
def build_model(args: argparse.Namespace) -> nn.Module:
    """SimMPNet from the command line (``--pretrained none`` -> random init without file access)."""
    return SimMPNet(num_classes=args.num_classes, in_chans=DATASET_INFO[args.dataset]["in_chans"],
                    img_size=args.img_size, img_size_s2=args.img_size_s2,
                    scale=args.scale, num_k=args.num_k, feature_dim=args.feature_dim, pretrained=args.pretrained,
                    warmup_iters=args.warmup_iters, pool_size=args.pool_size)


def build_train_dataset(args: argparse.Namespace) -> torch.utils.data.Dataset:
    """Augmented 2-D training slices (grey sets) or images (RGB sets) of the data set's train split."""
    return build_dataset(args.dataset, args.root_path, args.list_dir, DATASET_INFO[args.dataset]["train_split"],
                         args.num_classes, seed=args.seed,
                         transform=build_train_transform(args.dataset, (args.img_size, args.img_size)))


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())


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


def train_loader(dataset: torch.utils.data.Dataset, sampler: GlobalBatchSampler, epoch: int,
                 args: argparse.Namespace, device: torch.device) -> DataLoader:
    """DataLoader of one epoch (this rank's share of every global batch); the shuffle and the dataset's
    augmentation set to this epoch. Batches are dicts, or a LoadFailure for a file that could not be loaded."""
    dataset.set_epoch(epoch)
    sampler.set_epoch(epoch)
    return DataLoader(ErrorsAsData(dataset), batch_sampler=sampler, num_workers=args.num_workers,
                      pin_memory=device.type == "cuda", collate_fn=collate_or_failure)


def wld_step(model: nn.Module, state: TrainState, epoch: int, first_step_of_epoch: bool, loss: float,
             wld_start_epoch: int) -> None:
    """W-LD after an optimizer step: record the loss at the first step of ``wld_start_epoch``; afterwards
    K = next_memory_k(previous_loss, loss, pool_size), set in every DMW-LA layer."""
    if epoch < wld_start_epoch:
        return
    if state.wld_previous_loss is None or (epoch == wld_start_epoch and first_step_of_epoch):
        state.wld_previous_loss = loss
        return
    model.set_memory_k(next_memory_k(state.wld_previous_loss, loss, model.pool_size))
    state.wld_previous_loss = loss


def make_optimizer(parameters, lr: float) -> torch.optim.Optimizer:
    """AdamW at a constant learning rate, as released, with PyTorch's fused kernel where the device has one: the same
    update in one pass over all parameters (on 2 CPU cores 0.06 s instead of 0.31 s per step for the small model)."""
    parameters = list(parameters)
    try:
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=WEIGHT_DECAY, fused=True)
    except RuntimeError:  # a device without the fused kernel
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=WEIGHT_DECAY)


def make_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    state: TrainState, args: argparse.Namespace) -> dict:
    """Everything needed to continue exactly (see utils.checkpoint)."""
    return {"model": model.state_dict(), "model_config": dict(model.config), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(), "memory_k": int(model.memory_k), **asdict(state),
            "rng": capture_rng_state(), "args": json_safe(vars(args))}


def restore_training(path: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, args: argparse.Namespace) -> TrainState:
    """Load ``path`` into model/optimizer/scaler, restore the RNGs and return the loop state."""
    ckpt = load_checkpoint(path, map_location="cpu")
    check_model_config(path, ckpt["model_config"], model.config)
    load_model_state(model, ckpt, path)
    model.set_memory_k(int(ckpt["memory_k"]))
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["scaler"] and scaler.is_enabled():
            scaler.load_state_dict(ckpt["scaler"])
        state = TrainState(**{key: ckpt[key] for key in TrainState.__dataclass_fields__})
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(path, f"not a training checkpoint that can be resumed: {type(exc).__name__}: "
                                    f"{exc}") from exc
    restore_rng_state(ckpt["rng"])
    saved_args = ckpt.get("args", {})
    for name in RESUME_SENSITIVE_ARGS:
        if name in saved_args and saved_args[name] != json_safe(getattr(args, name)):
            logger.warning("resuming with --%s %s (checkpoint was trained with %s): the run will not match an "
                           "uninterrupted one", name, getattr(args, name), saved_args[name])
    return state


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def preview_panel(image: torch.Tensor, label: torch.Tensor, logits: torch.Tensor, num_classes: int) -> np.ndarray:
    """uint8 RGB (ground truth | prediction) of one training item: image [1,H,W] (grey) or [3,H,W] (RGB), label
    [H,W], logits [C,H,W]."""
    shown = image[0] if image.shape[0] == 1 else image
    return gt_pred_panel(shown.float().cpu().numpy(), label.cpu().numpy(), logits.argmax(0).cpu().numpy(),
                         num_classes)


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------
class Trainer:
    """One training run; ``run()`` executes the epochs. Constructed by :func:`train`.

    In a torchrun process group every rank constructs its own Trainer; only rank 0 (``context.is_main``) writes.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.output_dir = Path(args.output_dir)
        if not args.resume and (self.output_dir / LAST_CHECKPOINT).exists():
            raise ValueError(f"{self.output_dir / LAST_CHECKPOINT}: a run already exists here; continue it with "
                             "--resume auto or choose another --output_dir")
        self.context, self.device = setup_distributed(args.device)
        seed_everything(args.seed, bool(args.deterministic))  # the same on every rank: identical initial weights
        self.amp = amp_dtype(args.amp)
        # Build/validate every input before anything is written.
        self.train_set = build_train_dataset(args)
        self.val_set = build_eval_dataset(args, args.val_list) if args.val_list else None
        self.test_set = None
        if args.select_best_on_test:
            self.test_set = build_eval_dataset(args, DATASET_INFO[args.dataset]["test_split"])
        self.model = self.create_model()
        self.model.set_grad_checkpointing(args.grad_checkpointing)
        self.global_batchnorm = self.context.enabled and bool(args.sync_bn)
        if self.global_batchnorm:
            convert_to_global_batchnorm(self.model)
        self.optimizer = self.create_optimizer()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=args.amp == "fp16")
        self.criterion = MultiHeadLoss(args.num_classes, global_batch=self.context.enabled)
        self.state = TrainState()
        if args.resume:
            self.state = restore_training(args.resume, self.model, self.optimizer, self.scaler, args)
        # the release keeps the last partial batch; a lone slice is dropped only because BatchNorm cannot train on it
        self.sampler = GlobalBatchSampler(len(self.train_set), args.batch_size, self.context, args.seed,
                                          drop_singleton=has_batchnorm(self.model))
        # Wrap and compile after the state is loaded; evaluation and state access use the plain module.
        self.forward_model = wrap_data_parallel(self.model, self.context, self.device)
        for layer in self.model.memory_layers():
            layer.read_counters()  # DDP broadcast rank 0's buffers at construction
        if args.compile:
            self.forward_model = torch.compile(self.forward_model)
        self.input_dtype = next(self.model.parameters()).dtype
        self.tb = TensorBoard(None)
        self.step_log = CsvLog(None, STEP_LOG_COLUMNS)
        self.epoch_log = CsvLog(None, EPOCH_LOG_COLUMNS)

    def create_model(self) -> nn.Module:
        """The network on the training device (a seam for tests that train in float64)."""
        return build_model(self.args).to(self.device)

    def create_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.model.parameters(), self.args.base_lr)

    # -- bookkeeping -------------------------------------------------------------------------------------------
    def log_start(self) -> None:
        args = self.args
        for note in args.notes:
            logger.info(note)
        logger.info("args: %s", json_safe(vars(args)))
        summary = model_summary(self.model, args.img_size)
        self.model.train()
        logger.info("model %s: %s parameters (%s trainable), %.2f GFLOPs at %dx%d", self.model.config,
                    f"{summary['params']:,}", f"{summary['trainable']:,}", summary["gflops"], args.img_size,
                    args.img_size)
        logger.info("%d training slices, batch %d (%d workers), device %s, amp %s%s", len(self.train_set),
                    args.batch_size, args.num_workers, self.device, args.amp,
                    "; the incomplete final batch is skipped" if self.sampler.drops_last else "")
        if self.context.enabled:
            logger.info("data parallel: %d processes of %d slices each (global batch %d), BatchNorm statistics %s",
                        self.context.world_size, self.sampler.local_batch, args.batch_size,
                        "over the global batch" if self.global_batchnorm else "per process, averaged every epoch")
        if args.resume:
            logger.info("resumed from %s at epoch %d, step %d, K %d", args.resume, self.state.next_epoch,
                        self.state.global_step, self.model.memory_k)

    def write_config(self) -> None:
        atomic_write_json(self.output_dir / "config.json",
                          {"args": vars(self.args), "model_config": self.model.config,
                           "train_slices": len(self.train_set), "world_size": self.context.world_size})

    def save(self, names: tuple[str, ...]) -> None:
        if not self.context.is_main:
            return
        checkpoint = make_checkpoint(self.model, self.optimizer, self.scaler, self.state, self.args)
        for name in names:
            save_checkpoint(self.output_dir / name, checkpoint)

    # -- loop --------------------------------------------------------------------------------------------------
    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, tuple[torch.Tensor, ...]]:
        """One optimizer step; returns (loss of the global batch, this rank's outputs)."""
        with autocast_context(self.device, self.amp):
            outputs = self.forward_model(images)
            loss = self.criterion(outputs, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        value = mean_over_ranks(loss.item(), self.device)
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss became {value} at step {self.state.global_step + 1}")
        return value, outputs

    def run_epoch(self, epoch: int) -> tuple[float, bool]:
        """One epoch; returns (mean loss, whether --max_steps was reached)."""
        args, state = self.args, self.state
        loader = train_loader(self.train_set, self.sampler, epoch, args, self.device)
        if len(loader) == 0:
            raise ValueError(f"{args.list_dir}: the training list gives no batch of {args.batch_size} slices "
                             f"({len(self.train_set)} listed)")
        self.model.train()
        losses: list[float] = []
        preview = None
        progress = tqdm(loader, desc=f"epoch {epoch + 1}/{args.max_epochs}", leave=False,
                        disable=None if self.context.is_main else True)
        for step_in_epoch, batch in enumerate(progress):
            if isinstance(batch, LoadFailure):
                raise DataError(batch.path, batch.problem)
            images = batch["image"].to(self.device, self.input_dtype, non_blocking=True)
            labels = batch["label"].to(self.device, non_blocking=True)
            loss, outputs = self.train_step(images, labels)
            state.global_step += 1
            wld_step(self.model, state, epoch, step_in_epoch == 0, loss, args.wld_start_epoch)
            if args.check_replicas and state.global_step % args.check_replicas == 0:
                check_replicas_identical(self.model, state.global_step)
            losses.append(loss)
            preview = (images[0].detach(), labels[0].detach(), sum(o[0].detach().float() for o in outputs))
            lr = self.optimizer.param_groups[0]["lr"]
            self.tb.scalar("train/loss", loss, state.global_step)
            self.tb.scalar("train/lr", lr, state.global_step)
            self.tb.scalar("wld/memory_k", self.model.memory_k, state.global_step)
            self.step_log.append(step=state.global_step, epoch=epoch, loss=f"{loss:.6g}", lr=f"{lr:.6g}",
                                 memory_k=self.model.memory_k)
            progress.set_postfix(loss=f"{loss:.4f}", K=self.model.memory_k)
            if state.global_step % LOG_EVERY_STEPS == 0:
                logger.info("step %d, epoch %d: loss %.6f, lr %g, K %d", state.global_step, epoch, loss, lr,
                            self.model.memory_k)
            if args.max_steps is not None and state.global_step >= args.max_steps:
                break
        if preview is not None and self.context.is_main:
            self.tb.image("train/overlay_gt_pred", preview_panel(*preview, args.num_classes), state.global_step)
        reached = args.max_steps is not None and state.global_step >= args.max_steps
        return float(np.mean(losses)), reached

    def evaluate_on(self, dataset: torch.utils.data.Dataset, tag: str, epoch: int) -> dict:
        """Summary of ``dataset`` (the evaluator's code path; the volumes shared out over the ranks), logged to
        TensorBoard and the log. Every rank returns the same summary."""
        world, rank = self.context.world_size, self.context.rank
        share = torch.utils.data.Subset(dataset, range(rank, len(dataset), world)) if world > 1 else dataset
        per_case, _ = evaluate_model(self.model, share, kind=data_kind(self.args.dataset),
                                     img_size=self.args.img_size, num_classes=self.args.num_classes,
                                     batch_size=self.args.batch_size,
                                     device=self.device, amp=self.amp, desc=tag)
        summary = summarize({case: metrics for part in gather_objects(per_case) for case, metrics in part.items()})
        self.tb.scalar(f"{tag}/mean_dice", summary["mean_dice"], epoch + 1)
        self.tb.scalar(f"{tag}/mean_hd95", summary["mean_hd95"], epoch + 1)
        logger.info("epoch %d %s: mean DSC %.4f, mean HD95 %.2f", epoch, tag, summary["mean_dice"],
                    summary["mean_hd95"])
        return summary

    def end_of_epoch(self, epoch: int, last_epoch: bool) -> tuple[tuple[str, ...], dict | None]:
        """Validation / test-based selection; returns the checkpoint names to write and the validation summary."""
        args, state = self.args, self.state
        if self.context.enabled and not self.global_batchnorm:
            average_batchnorm_statistics(self.model)
        names = [LAST_CHECKPOINT]
        validation = None
        if self.val_set is not None and ((epoch + 1) % args.val_every == 0 or last_epoch):
            validation = self.evaluate_on(self.val_set, "val", epoch)
            if validation["mean_dice"] > state.best_val_dice:
                state.best_val_dice = float(validation["mean_dice"])
                names.append(BEST_VAL_CHECKPOINT)
        if self.test_set is not None and epoch >= args.wld_start_epoch:
            dice = float(self.evaluate_on(self.test_set, "test", epoch)["mean_dice"])
            if dice >= state.best_test_dice:  # release: `best <= performance`
                state.best_test_dice = dice
                names.append(BEST_TEST_CHECKPOINT)
        return tuple(names), validation

    def run(self) -> dict:
        state = self.state
        if not self.context.is_main:
            self.loop(CreatedPaths())
        else:
            with removed_on_failure() as created:
                created.mkdir(self.output_dir)
                with run_logging(created.track(self.output_dir / "log.txt")):
                    self.tb = TensorBoard(created.track(self.output_dir / "tb"))
                    self.step_log = CsvLog(created.track(self.output_dir / "train_steps.csv"), STEP_LOG_COLUMNS)
                    self.epoch_log = CsvLog(created.track(self.output_dir / "epochs.csv"), EPOCH_LOG_COLUMNS)
                    try:
                        created.track(self.output_dir / "config.json")
                        self.write_config()
                        self.log_start()
                        self.loop(created)
                    finally:
                        self.tb.close()
        return {"output_dir": str(self.output_dir), "epochs": state.next_epoch, "global_step": state.global_step,
                "memory_k": int(self.model.memory_k), "checkpoint": str(self.output_dir / LAST_CHECKPOINT)}

    def loop(self, created: CreatedPaths) -> None:
        """Epochs from ``state.next_epoch``; after the first checkpoint the run directory is kept even on failure."""
        args, state = self.args, self.state
        if state.next_epoch >= args.max_epochs:
            logger.info("nothing to do: checkpoint is at epoch %d of %d", state.next_epoch, args.max_epochs)
            return
        for epoch in range(state.next_epoch, args.max_epochs):
            started = time.perf_counter()
            mean_loss, reached = self.run_epoch(epoch)
            state.next_epoch = epoch + 1
            names, validation = self.end_of_epoch(epoch, last_epoch=reached or epoch == args.max_epochs - 1)
            self.tb.scalar("train/epoch_loss", mean_loss, epoch + 1)
            self.save(names)
            created.disarm()
            seconds = time.perf_counter() - started
            self.epoch_log.append(epoch=epoch, mean_loss=f"{mean_loss:.6g}", seconds=f"{seconds:.1f}",
                                  val_dice=None if validation is None else f"{validation['mean_dice']:.6g}",
                                  val_hd95=None if validation is None else f"{validation['mean_hd95']:.6g}")
            logger.info("epoch %d: mean loss %.6f, step %d, K %d, %.1fs -> %s", epoch, mean_loss,
                        state.global_step, self.model.memory_k, seconds, ", ".join(names))
            if reached:
                logger.info("stopping: --max_steps %d reached", args.max_steps)
                break


def train(args: argparse.Namespace) -> dict:
    """Train from parsed command-line arguments (see utils.cli.build_train_parser); returns a short summary.
    Under torchrun each process calls this; the process group is left at the end."""
    try:
        return Trainer(args).run()
    finally:
        teardown_distributed()

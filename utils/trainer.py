"""Training loop of every registered model on every registered data set, with the model family's training recipe.

The recipe (``networks.recipe.TrainingRecipe``, declared at registration, every field a command-line option) sets the
optimiser, the learning-rate schedule, batch, epochs and early stopping; Sim-MPNet and the smp baselines keep the
authors' release (AdamW lr 1e-4, weight decay 1e-4, constant lr, batch 20, 300 epochs, no early stop), MatchSeg its
specification's (Adam lr 1e-4, cosine decay, batch 8, 200 epochs, early stop with patience 30). The learning rate is
a function of the epoch (set at the start of each), and the early-stop counter is loop state saved in every
checkpoint, so a resumed run follows the same schedule and stops at the same epoch. What a model
does differently goes through its hooks (``networks.base.SegmentationModel``): its loss (``default_loss``), the
update after every optimizer step (Sim-MPNet: W-LD's memory K), the scalars logged per step, its extra checkpoint
state. A batch is a dict; the model reads it through ``forward_batch`` (a support-set model finds its context there).

Everything that influences the run is a function of (seed, epoch): its batches (``utils.train_data``) do not depend
on the number of workers, and ``last.pth`` (written every epoch, ``utils.resume``) holds everything needed for a
resumed run to end in exactly the state of an uninterrupted one. The recipe's optimiser and per-epoch learning rate
are ``utils.optimisation``'s.

Under torchrun the same loop runs data-parallel (see utils.distributed): ``--batch_size`` stays the global batch,
rank 0 alone logs, validates (with the other ranks' share of the volumes) and writes files.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from datasets import get_dataset
from networks import create_model, model_entry, model_summary
from utils.batch_context import model_context, with_training_context, with_validation_context
from utils.checkpoint import atomic_write_json
from utils.config import TrainConfig
from utils.distributed import (
    average_batchnorm_statistics, check_replicas_identical, convert_to_global_batchnorm, gather_objects,
    mean_over_ranks, setup_distributed, teardown_distributed, wrap_data_parallel,
)
from utils.evaluator import build_eval_dataset, evaluate_model, gt_pred_panel
from utils.inference import sum_of_heads
from utils.metrics import summarize
from utils.model_input import with_model_input
from utils.optimisation import effective_recipe, recipe_optimizer, set_learning_rate
from utils.resume import TrainState, make_checkpoint, recorded_options, restore_training
from utils.runfolder import (  # noqa: F401 - the checkpoint names, re-exported
    BEST_TEST_CHECKPOINT, BEST_VAL_CHECKPOINT, LAST_CHECKPOINT, RunInterrupted, SignalStop, claim_run_folder,
    locked_run_folder, write_checkpoint_set,
)
from utils.runlog import (
    CreatedPaths, CsvLog, TensorBoard, amp_dtype, errors_logged, held_warnings, logger, removed_on_failure,
    run_logging, seed_everything, to_log_file,
)
from utils.train_data import batch_on_device, build_train_dataset, make_batch_sampler, train_loader

LOG_EVERY_STEPS = 50  # release logs the loss every 50 iterations
STEP_LOG_COLUMNS = ("step", "epoch", "loss", "lr")  # train_steps.csv, then one column per model scalar
EPOCH_LOG_COLUMNS = ("epoch", "mean_loss", "val_dice", "val_hd95", "seconds")  # epochs.csv


# ----------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------
def build_model(config: TrainConfig) -> nn.Module:
    """The registered model ``config.run.model`` for the data set (``--pretrained none`` -> random init, no file
    access); the family's per-data-set settings apply unless an option overrides them. Its input channels are the
    data set's, or 1 (``--in_chans 1``: a grey model, colour images converted to grey, utils.model_input)."""
    run = config.run
    spec = get_dataset(run.dataset)
    in_chans = run.in_chans or spec.in_chans
    if in_chans not in (spec.in_chans, 1):
        raise ValueError(f"--in_chans {in_chans}: the model takes the data set's {spec.in_chans} channel(s) or 1 "
                         f"(grey)")
    return create_model(run.model, dataset=spec.name, pretrained=run.pretrained, num_classes=run.num_classes,
                        in_chans=in_chans, **config.model_options)


def train_options(config: TrainConfig):
    """The family's training options (its registered dataclass) from the run's values, or None."""
    options_class = model_entry(config.run.model).train_options
    return None if options_class is None else options_class(**config.train_options)


class BatchForward(nn.Module):
    """``model.forward_batch(batch)`` as a module's forward, so that DDP and torch.compile wrap the batch seam."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict):
        return self.model.forward_batch(batch)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def scalar_columns(scalars: dict[str, float]) -> dict[str, float]:
    """The model's logged scalars by CSV column: the part of each key after its last '/'."""
    return {key.rsplit("/", 1)[-1]: value for key, value in scalars.items()}


def format_scalars(scalars: dict[str, float]) -> str:
    """``", <column> <value>"`` suffix of the log lines, one per model scalar."""
    return "".join(f", {name} {value:g}" for name, value in scalar_columns(scalars).items())


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

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        run = config.run
        self.output_dir = Path(run.output_dir)
        if not run.resume:  # fail fast; checked again, with the folder's lock, before anything is written
            claim_run_folder(self.output_dir, None, None)
        self.context, self.device = setup_distributed(run.device)
        seed_everything(run.seed, bool(run.deterministic))  # the same on every rank: identical initial weights
        self.amp = amp_dtype(run.amp)
        self.recipe, self.recipe_note = effective_recipe(config)
        self.spec = get_dataset(run.dataset)
        # Build/validate every input before anything is written.
        with held_warnings(logging.INFO) as self.model_notes:  # the weight file loaded, or missing: into log.txt
            self.model = self.create_model()
        self.model.set_grad_checkpointing(run.grad_checkpointing)
        self.model.start_training(train_options(config))
        img_size, device = self.model.img_size, str(self.device)
        provider = model_context(run.model)

        def model_input(dataset):
            return with_model_input(dataset, self.spec, self.model, provider)

        self.train_set = model_input(with_training_context(build_train_dataset(run, img_size), config, img_size,
                                                           device))
        self.val_set = None
        if run.val_list:
            self.val_set = model_input(with_validation_context(build_eval_dataset(run, run.val_list), config,
                                                               img_size, device))
        self.test_set = None
        if run.select_best_on_test:
            self.test_set = model_input(with_validation_context(build_eval_dataset(run, self.spec.test_split),
                                                                config, img_size, device))
        self.global_batchnorm = self.context.enabled and bool(run.sync_bn)
        if self.global_batchnorm:
            convert_to_global_batchnorm(self.model)
        self.optimizer = self.create_optimizer()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=run.amp == "fp16")
        self.criterion = self.model.default_loss(global_batch=self.context.enabled)
        self.state = TrainState()
        with held_warnings() as self.early_warnings:  # written to log.txt once it is open
            if run.resume:
                self.state = restore_training(run.resume, self.model, self.optimizer, self.scaler, config,
                                              self.recipe)
            claim_run_folder(self.output_dir, run.resume, self.state.run_id)
        # the release keeps the last partial batch; a lone slice is dropped only because BatchNorm cannot train on it
        self.sampler = make_batch_sampler(self.spec, len(self.train_set), self.recipe.batch_size, run.seed,
                                          self.context, drop_singleton=has_batchnorm(self.model))
        # Wrap and compile after the state is loaded; evaluation and state access use the plain module.
        self.forward_model = wrap_data_parallel(BatchForward(self.model), self.context, self.device)
        self.model.after_replicas_synchronised()  # DDP broadcast rank 0's buffers at construction
        if run.compile:
            self.forward_model = torch.compile(self.forward_model)
        self.input_dtype = next(self.model.parameters()).dtype
        self.tb = TensorBoard(None)
        self.step_columns = (*STEP_LOG_COLUMNS, *scalar_columns(self.model.log_scalars()))
        self.step_log = CsvLog(None, self.step_columns)
        self.epoch_log = CsvLog(None, EPOCH_LOG_COLUMNS)

    def create_model(self) -> nn.Module:
        """The network on the training device (a seam for tests that train in float64)."""
        return build_model(self.config).to(self.device)

    def create_optimizer(self) -> torch.optim.Optimizer:
        """The recipe's optimiser (a seam for tests); its learning rate is set per epoch by the schedule."""
        return recipe_optimizer(self.model.parameters(), self.recipe)

    @property
    def stopped_early(self) -> bool:
        """Whether the early-stop rule has ended the run (also true of a checkpoint of such a run)."""
        patience = self.recipe.early_stop_patience
        return bool(patience) and self.state.validations_since_best >= patience

    # -- bookkeeping -------------------------------------------------------------------------------------------
    def log_start(self) -> None:
        run = self.config.run
        for note in run.notes:
            logger.info(note)
        logger.info("options: %s", recorded_options(self.config))
        logger.info("training recipe (%s's defaults, command-line options win): %s", self.model.arch,
                    self.recipe.describe())
        if self.recipe_note:
            logger.info(self.recipe_note)
        img_size = self.model.img_size
        summary = model_summary(self.model, img_size)
        self.model.train()
        logger.info("model %s %s: %s parameters (%s trainable), %.2f GFLOPs at %dx%d", self.model.arch,
                    self.model.config, f"{summary['params']:,}", f"{summary['trainable']:,}", summary["gflops"],
                    img_size, img_size)
        context_info = getattr(self.train_set, "context_info", None)
        if context_info:
            logger.info("batch context: %s", context_info)
        logger.info("%d training slices, batch %d (%d workers), device %s, amp %s%s", len(self.train_set),
                    self.recipe.batch_size, run.num_workers, self.device, run.amp,
                    "; the incomplete final batch is skipped" if self.sampler.drops_last else "")
        if self.context.enabled:
            logger.info("data parallel: %d processes of %d slices each (global batch %d), BatchNorm statistics %s",
                        self.context.world_size, self.sampler.local_batch, self.recipe.batch_size,
                        "over the global batch" if self.global_batchnorm else "per process, averaged every epoch")
        if run.resume:
            logger.info("resumed from %s at epoch %d, step %d%s", run.resume, self.state.next_epoch,
                        self.state.global_step, format_scalars(self.model.log_scalars()))

    def write_config(self) -> None:
        """config.json: the run's options as its checkpoints record them, with the model and the data it sees."""
        atomic_write_json(self.output_dir / "config.json",
                          {"run_id": self.state.run_id, "options": recorded_options(self.config),
                           "arch": self.model.arch, "model_config": asdict(self.model.config),
                           "train_slices": len(self.train_set), "world_size": self.context.world_size,
                           "context": getattr(self.train_set, "context_info", None)})

    def save(self, names: tuple[str, ...]) -> None:
        if not self.context.is_main:
            return
        write_checkpoint_set(self.output_dir, names,
                             make_checkpoint(self.model, self.optimizer, self.scaler, self.state, self.config))

    # -- loop --------------------------------------------------------------------------------------------------
    def train_step(self, batch: dict) -> tuple[float, object]:
        """One optimizer step; returns (loss of the global batch, this rank's outputs)."""
        with autocast_context(self.device, self.amp):
            outputs = self.forward_model(batch)
            loss = self.criterion(outputs, batch["label"])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        value = mean_over_ranks(loss.item(), self.device)
        if not math.isfinite(value):
            raise FloatingPointError(f"{self.output_dir}: training diverged at step {self.state.global_step + 1}: "
                                     f"loss {value} (the checkpoints already written are kept)")
        return value, outputs

    def run_epoch(self, epoch: int) -> tuple[float, bool]:
        """One epoch; returns (mean loss, whether --max_steps was reached)."""
        run, state = self.config.run, self.state
        loader = train_loader(self.train_set, self.sampler, epoch, run.num_workers, self.device)
        if len(loader) == 0:
            raise ValueError(f"{run.list_dir}: the training list gives no batch of {self.recipe.batch_size} slices "
                             f"({len(self.train_set)} listed)")
        set_learning_rate(self.optimizer, self.recipe.learning_rate(epoch))
        self.model.before_epoch(epoch)
        self.model.train()
        losses: list[float] = []
        preview = None
        progress = tqdm(loader, desc=f"epoch {epoch + 1}/{self.recipe.max_epochs}", leave=False,
                        disable=None if self.context.is_main else True)
        for step_in_epoch, batch in enumerate(progress):
            batch = batch_on_device(batch, self.device, self.input_dtype)
            loss, outputs = self.train_step(batch)
            state.global_step += 1
            self.model.after_optimizer_step(epoch, step_in_epoch == 0, loss)
            if run.check_replicas and state.global_step % run.check_replicas == 0:
                check_replicas_identical(self.model, state.global_step)
            losses.append(loss)
            preview = (batch["image"][0].detach(), batch["label"][0].detach(), sum_of_heads(outputs)[0].detach())
            lr = self.optimizer.param_groups[0]["lr"]
            scalars = self.model.log_scalars()
            self.tb.scalar("train/loss", loss, state.global_step)
            self.tb.scalar("train/lr", lr, state.global_step)
            for tag, value in scalars.items():
                self.tb.scalar(tag, value, state.global_step)
            self.step_log.append(step=state.global_step, epoch=epoch, loss=f"{loss:.6g}", lr=f"{lr:.6g}",
                                 **scalar_columns(scalars))
            progress.set_postfix(loss=f"{loss:.4f}", **scalar_columns(scalars))
            if state.global_step % LOG_EVERY_STEPS == 0:
                logger.info("step %d, epoch %d: loss %.6f, lr %g%s", state.global_step, epoch, loss, lr,
                            format_scalars(scalars))
            if run.max_steps is not None and state.global_step >= run.max_steps:
                break
        if preview is not None and self.context.is_main:
            self.tb.image("train/overlay_gt_pred", preview_panel(*preview, run.num_classes), state.global_step)
        reached = run.max_steps is not None and state.global_step >= run.max_steps
        return float(np.mean(losses)), reached

    def evaluate_on(self, dataset: torch.utils.data.Dataset, tag: str, epoch: int) -> dict:
        """Summary of ``dataset`` (the evaluator's code path; the volumes shared out over the ranks), logged to
        TensorBoard and the log. Every rank returns the same summary."""
        world, rank = self.context.world_size, self.context.rank
        share = torch.utils.data.Subset(dataset, range(rank, len(dataset), world)) if world > 1 else dataset
        per_case, _ = evaluate_model(self.model, share, kind=self.spec.kind,
                                     img_size=self.model.img_size, num_classes=self.config.run.num_classes,
                                     batch_size=self.recipe.batch_size,
                                     device=self.device, amp=self.amp, desc=tag,
                                     distance_unit=self.spec.distance_unit)
        summary = summarize({case: metrics for part in gather_objects(per_case) for case, metrics in part.items()})
        self.tb.scalar(f"{tag}/mean_dice", summary["mean_dice"], epoch + 1)
        self.tb.scalar(f"{tag}/mean_hd95", summary["mean_hd95"], epoch + 1)
        logger.info("epoch %d %s: mean DSC %.4f, mean HD95 %.2f %s", epoch, tag, summary["mean_dice"],
                    summary["mean_hd95"], self.spec.distance_unit)
        return summary

    def end_of_epoch(self, epoch: int, last_epoch: bool) -> tuple[tuple[str, ...], dict | None]:
        """Validation / test-based selection; returns the checkpoint names to write and the validation summary."""
        run, state = self.config.run, self.state
        if self.context.enabled and not self.global_batchnorm:
            average_batchnorm_statistics(self.model)
        names = [LAST_CHECKPOINT]
        validation = None
        if self.val_set is not None and ((epoch + 1) % run.val_every == 0 or last_epoch):
            validation = self.evaluate_on(self.val_set, "val", epoch)
            if validation["mean_dice"] > state.best_val_dice:
                state.best_val_dice = float(validation["mean_dice"])
                state.validations_since_best = 0
                names.append(BEST_VAL_CHECKPOINT)
            else:
                state.validations_since_best += 1
        if self.test_set is not None and epoch >= self.model.first_selection_epoch:
            dice = float(self.evaluate_on(self.test_set, "test", epoch)["mean_dice"])
            if dice >= state.best_test_dice:  # release: `best <= performance`
                state.best_test_dice = dice
                names.append(BEST_TEST_CHECKPOINT)
        return tuple(names), validation

    def run(self) -> dict:
        state, run = self.state, self.config.run
        if not self.context.is_main:
            self.loop(CreatedPaths())
        else:
            with removed_on_failure() as created, SignalStop.installed():
                created.mkdir(self.output_dir)
                with locked_run_folder(self.output_dir) as opening_warnings, \
                        run_logging(created.track(self.output_dir / "log.txt")), errors_logged(self.describe_stop):
                    to_log_file(self.model_notes + self.early_warnings + opening_warnings)
                    self.state.run_id = claim_run_folder(self.output_dir, run.resume, self.state.run_id)
                    self.tb = TensorBoard(created.track(self.output_dir / "tb"))
                    self.step_log = CsvLog(created.track(self.output_dir / "train_steps.csv"), self.step_columns)
                    self.epoch_log = CsvLog(created.track(self.output_dir / "epochs.csv"), EPOCH_LOG_COLUMNS)
                    try:
                        created.track(self.output_dir / "config.json")
                        self.write_config()
                        self.log_start()
                        self.loop(created)
                    finally:
                        self.tb.close()
        return {"output_dir": str(self.output_dir), "epochs": state.next_epoch, "global_step": state.global_step,
                "stopped_early": self.stopped_early,
                **scalar_columns(self.model.log_scalars()), "checkpoint": str(self.output_dir / LAST_CHECKPOINT)}

    def loop(self, created: CreatedPaths) -> None:
        """Epochs from ``state.next_epoch``; after the first checkpoint the run directory is kept even on failure."""
        run, state, max_epochs = self.config.run, self.state, self.recipe.max_epochs
        if state.next_epoch >= max_epochs:
            logger.info("nothing to do: checkpoint is at epoch %d of %d", state.next_epoch, max_epochs)
            return
        if self.stopped_early:
            logger.info("nothing to do: the run stopped early after epoch %d (%s)", state.next_epoch - 1,
                        self.early_stop_reason())
            return
        for epoch in range(state.next_epoch, max_epochs):
            started = time.perf_counter()
            mean_loss, reached = self.run_epoch(epoch)
            state.next_epoch = epoch + 1
            names, validation = self.end_of_epoch(epoch, last_epoch=reached or epoch == max_epochs - 1)
            self.tb.scalar("train/epoch_loss", mean_loss, epoch + 1)
            with SignalStop.deferred():  # the checkpoint set and its epochs.csv row: both or neither
                self.save(names)
                created.disarm()
                seconds = time.perf_counter() - started
                self.epoch_log.append(epoch=epoch, mean_loss=f"{mean_loss:.6g}", seconds=f"{seconds:.1f}",
                                      val_dice=None if validation is None else f"{validation['mean_dice']:.6g}",
                                      val_hd95=None if validation is None else f"{validation['mean_hd95']:.6g}")
            logger.info("epoch %d: mean loss %.6f, step %d%s, %.1fs -> %s", epoch, mean_loss,
                        state.global_step, format_scalars(self.model.log_scalars()), seconds, ", ".join(names))
            if reached:
                logger.info("stopping: --max_steps %d reached", run.max_steps)
                break
            if self.stopped_early:
                logger.info("stopping early after epoch %d of %d: %s", epoch, max_epochs,
                            self.early_stop_reason())
                break

    def describe_stop(self, exc: BaseException) -> None:
        """Where an interrupted run stopped, and what it keeps (the message the command line prints)."""
        if isinstance(exc, RunInterrupted):
            last = self.output_dir / LAST_CHECKPOINT
            exc.detail = (f"at step {self.state.global_step}; {last} is kept (continue with --resume auto)"
                          if last.exists() else f"at step {self.state.global_step}, before the first checkpoint: "
                                                f"the files it created are removed")

    def early_stop_reason(self) -> str:
        return (f"validation mean DSC has not risen above its best, {self.state.best_val_dice:.4f} "
                f"({BEST_VAL_CHECKPOINT}), for {self.state.validations_since_best} validations "
                f"(--early_stop_patience {self.recipe.early_stop_patience})")


def train(config: TrainConfig) -> dict:
    """Train a run configuration (see utils.cli.build_train_parser); returns a short summary.
    Under torchrun each process calls this; the process group is left at the end."""
    try:
        return Trainer(config).run()
    finally:
        teardown_distributed()

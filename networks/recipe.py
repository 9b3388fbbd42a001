"""A model family's training recipe: optimiser, learning-rate schedule, batch, length and stopping rule.

A family declares its recipe at registration (``register_model(..., recipe=TrainingRecipe(...))``); the engine reads
it from the registry and never names a model. Every field is a command-line option of the training scripts
(``--optimizer --base_lr --weight_decay --lr_schedule --batch_size --max_epochs --early_stop_patience``) whose
default is the chosen model's recipe. A family that declares none trains with :data:`RELEASE_RECIPE`, Sim-MPNet's
released recipe, so that baselines compare with it on equal terms.

The cosine schedule is a function of the epoch alone (one value per epoch, see :meth:`TrainingRecipe.learning_rate`):
a resumed run needs no scheduler state, only the epoch it resumes at, and the rate does not depend on how many
steps an epoch has (episodic samplers, dropped last batches, ``--max_steps``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .options import cli_option as _option

OPTIMIZERS = ("adamw", "adam")
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainingRecipe:
    """How a family trains; the defaults are the authors' release of Sim-MPNet (AdamW lr 1e-4, weight decay 1e-4,
    constant lr, batch 20, 300 epochs, no early stop)."""

    optimizer: str = field(default="adamw", metadata=_option(
        "adamw: decoupled weight decay (Loshchilov & Hutter); adam: weight decay added to the gradient (L2)",
        choices=OPTIMIZERS))
    base_lr: float = field(default=1e-4, metadata=_option("learning rate (the first epoch's under cosine)"))
    weight_decay: float = field(default=1e-4, metadata=_option("weight decay of the optimizer"))
    lr_schedule: str = field(default="constant", metadata=_option(
        "constant: base_lr throughout; cosine: base_lr * (1 + cos(pi * epoch / max_epochs)) / 2, set at the start "
        "of every epoch (0-based), over max_epochs whether or not the run stops early", choices=LR_SCHEDULES))
    batch_size: int = field(default=20, metadata=_option(
        "images/slices per (global) training batch", aliases=("--batch-size",)))
    max_epochs: int = field(default=300, metadata=_option("training epochs"))
    early_stop_patience: int = field(default=0, metadata=_option(
        "stop after this many validations in a row without a higher validation mean DSC than the best so far "
        "(best_val.pth); 0: off; off without a validation list", minimum=0))

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"--lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not (math.isfinite(self.base_lr) and self.base_lr > 0):
            raise ValueError(f"--base_lr must be a positive number, got {self.base_lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"--weight_decay must be a non-negative number, got {self.weight_decay}")
        for name in ("batch_size", "max_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.early_stop_patience < 0:
            raise ValueError(f"--early_stop_patience must be >= 0 (0: off), got {self.early_stop_patience}")

    def learning_rate(self, epoch: int) -> float:
        """The learning rate of every step of ``epoch`` (0-based). Cosine is torch's CosineAnnealingLR with
        T_max = max_epochs and eta_min = 0 stepped once per epoch, in closed form: the first epoch trains at
        base_lr, the last at base_lr * (1 + cos(pi * (max_epochs - 1) / max_epochs)) / 2 > 0."""
        if self.lr_schedule == "constant":
            return self.base_lr
        return self.base_lr * (1 + math.cos(math.pi * epoch / self.max_epochs)) / 2

    @property
    def length_dependent(self) -> bool:
        """Whether the rates depend on max_epochs (a resumed run with another --max_epochs follows other rates)."""
        return self.lr_schedule != "constant"

    def describe(self) -> str:
        """One line for the log."""
        schedule = "constant" if self.lr_schedule == "constant" else f"{self.lr_schedule} over {self.max_epochs} epochs"
        stop = (f"early stop after {self.early_stop_patience} validations without a better mean DSC"
                if self.early_stop_patience else "no early stop")
        return (f"{self.optimizer} lr {self.base_lr:g} ({schedule}), weight decay {self.weight_decay:g}, batch "
                f"{self.batch_size}, {self.max_epochs} epochs, {stop}")


#: Sim-MPNet's released recipe, also that of every family that declares none (the smp baselines).
RELEASE_RECIPE = TrainingRecipe()

#: What a checkpoint written before recipes existed was trained with (the engine only built this optimiser,
#: schedule and stopping rule); its batch, lr and length are in its ``args``.
LEGACY_RECIPE = RELEASE_RECIPE

"""Run bookkeeping shared by training and evaluation: logging to file + console, TensorBoard, text tables,
removal of what a failed run created, and runtime setup (seeds, mixed-precision dtype)."""
from __future__ import annotations

import contextlib
import csv
import logging
import os
import random
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tensorboardX import SummaryWriter

LOGGER_NAME = "simmpnet"
LOG_FORMAT = "[%(asctime)s.%(msecs)03d] %(message)s"
LOG_DATEFMT = "%H:%M:%S"

logger = logging.getLogger(LOGGER_NAME)


@contextlib.contextmanager
def run_logging(log_file: str | os.PathLike | None, console: bool = True) -> Iterator[logging.Logger]:
    """Attach a file handler (appending, so a resumed run continues its log) and a stdout handler to the
    ``simmpnet`` logger for the duration of the block; both are removed and closed afterwards."""
    handlers: list[logging.Handler] = []
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file, mode="a", encoding="utf-8"))
    if console:
        handlers.append(logging.StreamHandler(sys.stdout))
        handlers[-1].addFilter(lambda record: not getattr(record, "file_only", False))
    formatter = logging.Formatter(LOG_FORMAT, datefmt=LOG_DATEFMT)
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    previous_level = logger.level
    logger.setLevel(logging.INFO)
    logger.propagate = False  # our handlers only; avoids duplicates when a root handler exists
    try:
        yield logger
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(previous_level)


FILE_ONLY = {"file_only": True}  # logger.error(..., extra=FILE_ONLY): to log.txt, not the console


def error_line(exc: BaseException) -> str:
    """One line ``<file>: <problem>`` for an error (an OSError by its file name and reason)."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


@contextlib.contextmanager
def held_warnings(level: int = logging.WARNING) -> Iterator[list[logging.LogRecord]]:
    """The warnings (records of ``level`` and above) logged in the block, shown on stderr as ever and collected, so
    that :func:`to_log_file` can write them into the run's log.txt once it is open (a resumed run warns before that;
    building the model logs, at INFO, the weight file it loaded)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)
            print(record.getMessage(), file=sys.stderr)

    handler = Collect(level)
    logger.addHandler(handler)
    previous_level = logger.level
    logger.setLevel(min(level, logger.getEffectiveLevel()))
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)


def to_log_file(records: Sequence[logging.LogRecord]) -> None:
    """Write ``records`` to the log files of the current :func:`run_logging` block only."""
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            for record in records:
                handler.handle(record)


@contextlib.contextmanager
def errors_logged(describe_stop=None) -> Iterator[None]:
    """Whatever ends the block with an exception is also written to the log files (the console gets it once, from
    the command line's handler); ``describe_stop(exc)`` may add the run's position to an interruption first."""
    try:
        yield
    except BaseException as exc:
        if describe_stop is not None:
            describe_stop(exc)
        logger.error("run stopped: %s", error_line(exc), extra=FILE_ONLY)
        raise


class TensorBoard:
    """Thin wrapper over ``tensorboardX.SummaryWriter``; ``log_dir=None`` makes every call a no-op."""

    def __init__(self, log_dir: str | os.PathLike | None) -> None:
        self._writer = SummaryWriter(str(log_dir)) if log_dir is not None else None

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, value, step)

    def image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        """``rgb``: uint8 [H, W, 3]."""
        if self._writer is not None:
            self._writer.add_image(tag, rgb, step, dataformats="HWC")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class CsvLog:
    """Appends rows to a CSV file (header written when the file is new), one flushed line per row.

    A resumed run appends to the same file, so rows after the last checkpoint of an interrupted run appear twice;
    readers keep the last row per key (step or epoch). ``path=None`` makes every call a no-op (non-zero ranks).
    """

    def __init__(self, path: str | os.PathLike | None, columns: Sequence[str]) -> None:
        self.path = None if path is None else Path(path)
        self.columns = tuple(columns)

    def append(self, **row: object) -> None:
        if self.path is None:
            return
        new = not self.path.exists() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            if new:
                writer.writerow(self.columns)
            writer.writerow(["" if row.get(name) is None else row[name] for name in self.columns])


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]], float_fmt: str = "{:.4f}") -> str:
    """Fixed-width text table; floats formatted with ``float_fmt`` (NaN shown as ``nan``)."""

    def cell(value: object) -> str:
        if isinstance(value, (float, np.floating)):
            return "nan" if np.isnan(value) else float_fmt.format(value)
        return str(value)

    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in text_rows)) if text_rows else len(str(h))
              for i, h in enumerate(header)]

    def line(cells: Sequence[object]) -> str:  # first column left-aligned, numbers right-aligned
        return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in text_rows)])


# ----------------------------------------------------------------------------------------------------------------
# Nothing half-written: remove what a failed run created
# ----------------------------------------------------------------------------------------------------------------
class CreatedPaths:
    """Records files and directories that a run creates, so that a run failing before it has produced a usable
    result can remove exactly those (pre-existing paths are never touched)."""

    def __init__(self) -> None:
        self._paths: list[Path] = []
        self.armed = True

    def track(self, path: str | os.PathLike) -> Path:
        """Call before creating ``path``: it is removed on rollback unless it already exists now."""
        path = Path(path)
        if not path.exists():
            self._paths.append(path)
        return path

    def mkdir(self, path: str | os.PathLike) -> Path:
        """``mkdir -p`` that tracks every directory level it creates."""
        path = Path(path)
        missing = [p for p in (path, *path.parents) if not p.exists()]
        for directory in reversed(missing):
            try:
                directory.mkdir()
            except FileExistsError:  # made by another process meanwhile: theirs, never removed by our rollback
                continue
            self._paths.append(directory)
        return path

    def disarm(self) -> None:
        """The run's output is usable from now on (e.g. a checkpoint exists): keep everything."""
        self.armed = False

    def rollback(self) -> None:
        """Remove what was tracked, newest first (unless disarmed)."""
        if not self.armed:
            return
        for path in reversed(self._paths):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists() or path.is_symlink():
                path.unlink()
        self._paths.clear()


@contextlib.contextmanager
def removed_on_failure() -> Iterator[CreatedPaths]:
    """``with removed_on_failure() as created: ...`` rolls back ``created`` if the block raises."""
    created = CreatedPaths()
    try:
        yield created
    except BaseException:
        created.rollback()
        raise


# ----------------------------------------------------------------------------------------------------------------
# Runtime setup shared by training and evaluation
# ----------------------------------------------------------------------------------------------------------------
AMP_DTYPES = {"none": None, "bf16": "bfloat16", "fp16": "float16"}


def amp_dtype(mode: str) -> torch.dtype | None:
    """--amp value -> autocast dtype (None: full precision)."""
    name = AMP_DTYPES[mode]
    return None if name is None else getattr(torch, name)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (all devices); choose deterministic or autotuned cuDNN kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic

"""A training run's folder: owned by one process at a time, holding one run, left resumable however the run ends.

* Lock: ``.lock`` in the folder holds the owner's pid, host and start; a second process is refused with one line
  naming it. A lock whose process is gone (same host, pid not running or a different process by now) is stale: it
  is replaced, with a warning. A lock of another host is never judged stale: the message says to remove it.
* Identity: every run has a ``run_id`` (config.json and every checkpoint). Before anything is written, the folder
  is checked (:func:`claim_run_folder`): a new run needs a folder without a run's files; a resumed run needs the
  folder of its checkpoint's run, or a folder without a run (it then continues there as a new run id, forked from
  the checkpoint's). So another run's checkpoint never overwrites this folder's files, and ``--resume auto`` where
  checkpoints exist but no last.pth refuses instead of starting over.
* Leftovers: temporary files of an atomic writer that was killed are removed when the folder is next opened.
* Signals: SIGTERM / SIGINT raise :class:`RunInterrupted` (deferred while a checkpoint set is written), which the
  command line reports in one line; the folder keeps its last checkpoint set.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from datasets.io.atomic import is_temporary_name
from utils.checkpoint import save_checkpoint_set
from utils.runlog import held_warnings, logger

LOCK_NAME = ".lock"
LAST_CHECKPOINT = "last.pth"
BEST_VAL_CHECKPOINT = "best_val.pth"
BEST_TEST_CHECKPOINT = "best.pth"  # --select_best_on_test (release behaviour)
CHECKPOINTS = (LAST_CHECKPOINT, BEST_VAL_CHECKPOINT, BEST_TEST_CHECKPOINT)
CONFIG_NAME = "config.json"
RUN_FILES = (CONFIG_NAME, *CHECKPOINTS, "epochs.csv", "train_steps.csv")  # a folder with one of these holds a run
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked; ``str()`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path, self.problem = str(path), problem
        super().__init__(f"{self.path}: {problem}")


class RunInterrupted(BaseException):
    """SIGTERM or SIGINT during a run (a BaseException, like KeyboardInterrupt: no ``except Exception`` swallows
    it). ``str()`` is the one line the command line prints; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, detail: str = "") -> None:
        self.signum, self.detail = signum, detail
        super().__init__(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}" + (f": {self.detail}" if self.detail else "")


def new_run_id() -> str:
    return uuid.uuid4().hex


# ----------------------------------------------------------------------------------------------------------------
# Identity
# ----------------------------------------------------------------------------------------------------------------
def folder_run_id(folder: Path) -> str | None:
    """The run id config.json records (None: no config.json, or one written before run ids)."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError, AttributeError) as exc:
        raise RunFolderError(path, f"cannot read the run's config ({exc}); choose another --output_dir") from exc


def claim_run_folder(folder: str | os.PathLike, resume: str | None, checkpoint_run_id: str | None) -> str:
    """The run id this run writes into ``folder`` (see the module docstring), or RunFolderError naming the file that
    stands in the way. ``checkpoint_run_id``: the run id of the ``resume`` checkpoint (None: none or older)."""
    folder = Path(folder)
    RunLock(folder).check_free()
    present = [name for name in RUN_FILES if (folder / name).exists()]
    if not present:
        same_folder = resume is not None and Path(resume).resolve().parent == folder.resolve()
        return checkpoint_run_id if same_folder and checkpoint_run_id else new_run_id()
    checkpoints = [name for name in CHECKPOINTS if name in present]
    if resume is None:
        if LAST_CHECKPOINT in checkpoints:
            raise RunFolderError(folder / LAST_CHECKPOINT, "a run already exists here; continue it with --resume auto "
                                                           "or choose another --output_dir")
        if checkpoints:
            raise RunFolderError(folder, f"holds {', '.join(checkpoints)} but no {LAST_CHECKPOINT}: a new run would "
                                         f"overwrite them; resume from one with --resume {folder / checkpoints[0]}, "
                                         f"or choose another --output_dir")
        raise RunFolderError(folder / present[0], "a run that stopped before its first checkpoint is here (nothing "
                                                  "to resume): remove it, or choose another --output_dir")
    folder_id = folder_run_id(folder)
    inside = Path(resume).resolve().parent == folder.resolve()
    if folder_id is not None and folder_id == checkpoint_run_id:
        return folder_id
    if inside and (folder_id is None or checkpoint_run_id is None):  # written before run ids: the file's place
        return folder_id or checkpoint_run_id or new_run_id()  # in the folder is all that tells its run
    raise RunFolderError(resume, f"this checkpoint is of run {checkpoint_run_id or '(no id)'}, but {folder} holds run "
                                 f"{folder_id or '(no id)'}: resuming here would overwrite that run's files; give a "
                                 f"new --output_dir")


# ----------------------------------------------------------------------------------------------------------------
# Lock
# ----------------------------------------------------------------------------------------------------------------
def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), to tell a reused pid; None elsewhere."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def lock_holder_gone(holder: dict) -> bool:
    """Whether the process a lock names has ended (only decidable on its own host)."""
    if holder.get("host") != socket.gethostname():
        return False
    pid = int(holder.get("pid", 0))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    started = holder.get("process_start")
    return started is not None and process_start(pid) not in (None, started)


class RunLock:
    """The folder's ``.lock`` (created exclusively; see the module docstring)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.record = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": process_start(os.getpid()),
                       "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        self.held = False

    def holder(self) -> dict | None:
        for _ in range(20):  # a lock being created is empty for a moment
            try:
                return json.loads(self.path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                return None
            except ValueError:
                time.sleep(0.05)
        return {}

    def check_free(self, replace_stale: bool = False) -> None:
        """RunFolderError naming the lock when a live process (not this one) holds it; a stale lock is removed
        (with a warning) when ``replace_stale``."""
        holder = self.holder()
        if holder is None or (holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()):
            return
        if holder and lock_holder_gone(holder):
            if replace_stale:
                logger.warning("%s: stale lock of pid %s on %s (since %s), whose process has ended: replaced",
                               self.path, holder.get("pid"), holder.get("host"), holder.get("since"))
                self.path.unlink(missing_ok=True)
            return
        who = (f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}" if holder
               else "an unknown process")
        raise RunFolderError(self.path, f"the run folder is in use by {who}; wait for it to end or choose another "
                                        f"--output_dir (if no process uses it, remove this file)")

    def acquire(self) -> None:
        for _ in range(3):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self.check_free(replace_stale=True)
                continue
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(json.dumps(self.record))
            self.held = True
            return
        raise RunFolderError(self.path, "cannot take the run folder's lock (other processes keep taking it)")

    def release(self) -> None:
        if self.held and (self.holder() or {}).get("pid") == self.record["pid"]:
            self.path.unlink(missing_ok=True)
        self.held = False


def remove_stale_temporaries(folder: Path) -> None:
    """Remove the temporary files that a killed atomic writer left in ``folder`` (only called with the lock)."""
    stale = sorted(entry for entry in folder.iterdir() if entry.is_file() and is_temporary_name(entry.name))
    for entry in stale:
        entry.unlink(missing_ok=True)
    if stale:
        logger.warning("%s: removed %d temporary file(s) of an interrupted writer: %s", folder, len(stale),
                       ", ".join(entry.name for entry in stale))


@contextlib.contextmanager
def locked_run_folder(folder: str | os.PathLike) -> Iterator[list[logging.LogRecord]]:
    """Hold the folder's lock for the block (the folder exists), its stale temporary files removed first; yields the
    warnings of the opening (a stale lock replaced, leftovers removed) for the run's log, which opens after it."""
    lock = RunLock(folder)
    with held_warnings() as warnings:
        lock.acquire()
    try:
        with held_warnings() as more:
            remove_stale_temporaries(Path(folder))
        yield warnings + more
    finally:
        lock.release()


# ----------------------------------------------------------------------------------------------------------------
# Signals and the checkpoint set
# ----------------------------------------------------------------------------------------------------------------
class SignalStop:
    """SIGTERM / SIGINT -> :class:`RunInterrupted`, at once or, inside :meth:`deferred`, at its end."""

    deferring = 0
    pending: int | None = None

    @classmethod
    def handler(cls, signum: int, frame) -> None:
        if cls.deferring:
            cls.pending = signum
            return
        raise RunInterrupted(signum)

    @classmethod
    @contextlib.contextmanager
    def installed(cls) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return
        previous = {signum: signal.signal(signum, cls.handler) for signum in STOP_SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            cls.pending = None

    @classmethod
    @contextlib.contextmanager
    def deferred(cls) -> Iterator[None]:
        cls.deferring += 1
        try:
            yield
        finally:
            cls.deferring -= 1
        if not cls.deferring and cls.pending is not None:
            signum, cls.pending = cls.pending, None
            raise RunInterrupted(signum)


def write_checkpoint_set(folder: str | os.PathLike, names: tuple[str, ...], checkpoint: dict) -> None:
    """The checkpoint under ``names`` in ``folder``, verified, as one set (``utils.checkpoint.save_checkpoint_set``;
    the first name replaced last); a stop signal meanwhile takes effect once the set is written."""
    with SignalStop.deferred():
        save_checkpoint_set([Path(folder) / name for name in names], checkpoint)

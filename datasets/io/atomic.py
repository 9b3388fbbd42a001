"""The one atomic writer of the project (data files, checkpoints, reports, predictions all go through it).

:func:`atomic_path` gives a unique temporary name beside the target; on success it is renamed onto the target
(``os.replace``, atomic on one file system), on any error it is removed. So a target is always either its old
content or the complete new one, and two writers of one target never share a temporary file. The temporary file is
created with the permissions any new file gets (the umask), which the renamed file keeps. An OSError names the
target, never the temporary name (which no longer exists when the error is reported). :func:`atomic_write_all`
writes several files as one set: all temporary files first, then the renames.
"""
from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager

__all__ = ["TMP_SUFFIX", "atomic_path", "atomic_write_all", "atomic_write_bytes", "atomic_write_text",
           "is_temporary_name"]

TMP_SUFFIX = ".tmp"  # temporary files are hidden: .<name>.<random>.tmp
TMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}" + re.escape(TMP_SUFFIX) + "$")


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` is a temporary file name of :func:`atomic_path` (a writer that was killed leaves one)."""
    return bool(TMP_NAME.match(name))


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary file name next to ``path`` (its folder created if missing); on success os.replace() it
    onto ``path``, on any error remove it."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp_path = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")
    try:
        open(tmp_path, "xb").close()  # claim the name (exclusive), with the umask's permissions
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from exc
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:  # e.g. disk full while writing, a target that cannot be replaced: name the target
        if exc.filename in (None, tmp_path):
            raise OSError(exc.errno, exc.strerror, path) from exc
        raise
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, flushed to disk before the rename (a checkpoint or report survives a
    crash right after the call)."""
    with atomic_path(path) as tmp_path:
        write_synced(tmp_path, data)


def write_synced(path: str, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_all(files: Mapping[str | os.PathLike, bytes]) -> None:
    """Write several files as one set: every temporary file is complete before any target is replaced, and the
    targets are replaced in reverse order, the first one last (a set's reference file, e.g. a run's last.pth). If
    a write or a rename fails, the targets not yet replaced keep their old content and no temporary file is left."""
    with ExitStack() as stack:
        for path, data in files.items():
            write_synced(stack.enter_context(atomic_path(path)), data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))

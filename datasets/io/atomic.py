"""The one atomic writer of the project (data files, checkpoints, reports, predictions all go through it).

:func:`atomic_path` gives a unique temporary name beside the target; on success it is renamed onto the target
(``os.replace``, atomic on one file system), on any error it is removed. So a target is always either its old
content or the complete new one, and two writers of one target never share a temporary file. The temporary file is
created with the permissions any new file gets (the umask), which the renamed file keeps.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["TMP_SUFFIX", "atomic_path", "atomic_write_bytes", "atomic_write_text"]

TMP_SUFFIX = ".tmp"  # temporary files are hidden: .<name>.<random>.tmp


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary file name next to ``path`` (its folder created if missing); on success os.replace() it
    onto ``path``, on any error remove it."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp_path = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")
    open(tmp_path, "xb").close()  # claim the name (exclusive), with the umask's permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, flushed to disk before the rename (a checkpoint or report survives a
    crash right after the call)."""
    with atomic_path(path) as tmp_path, open(tmp_path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))

"""A whole output folder written atomically: everything goes into a hidden temporary folder beside the target, renamed
to the target only when complete (removed on any error), so a failed or interrupted run leaves nothing under the
target's name. A target that exists and is not empty is refused: a user's files are never overwritten."""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import DataError

__all__ = ["check_new_folder", "staged_folder"]


def check_new_folder(out: str | os.PathLike) -> None:
    """DataError unless ``out`` is absent or an empty folder."""
    out = os.fspath(out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise DataError(out, "exists and is not empty: choose another --out (existing files are never overwritten)")


@contextmanager
def staged_folder(out: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary folder to fill; on success it becomes ``out``, on any error it is removed."""
    out = os.path.normpath(os.fspath(out))
    check_new_folder(out)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out)}.{uuid.uuid4().hex[:12]}.tmp")
    os.makedirs(tmp)
    try:
        yield tmp
        if os.path.isdir(out):
            os.rmdir(out)  # empty (checked above)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)

"""Split lists: ``<list_dir>/<split>.txt``, one entry per line, which alone define a data set's splits."""
from __future__ import annotations

import os
from collections.abc import Iterable

from ..errors import DataError
from .atomic import atomic_path

__all__ = ["MISSING_LIST", "read_list", "write_list"]

MISSING_LIST = "list file does not exist"


def read_list(list_path: str | os.PathLike) -> list[str]:
    """Non-blank, stripped lines of a split list file; DataError if missing or empty."""
    list_path = os.fspath(list_path)
    if not os.path.isfile(list_path):
        raise DataError(list_path, MISSING_LIST)
    with open(list_path, encoding="utf-8") as handle:
        entries = [line.strip() for line in handle if line.strip()]
    if not entries:
        raise DataError(list_path, "list file is empty (no entries)")
    return entries


def write_list(path: str | os.PathLike, entries: Iterable[str]) -> None:
    """Atomically write a split list, one entry per line."""
    text = "".join(f"{entry}\n" for entry in entries)
    with atomic_path(path) as tmp_path, open(tmp_path, "w", encoding="utf-8") as handle:
        handle.write(text)

"""The one error type of the data side: a problem with one file or folder, reported as ``<path>: <problem>``.

Readers, preparations, phantoms, prediction inputs and support pools all raise it, so that every script can print a
bad input as one line naming the file (and carry on with the next input where that makes sense).
"""
from __future__ import annotations

import os

__all__ = ["DataError", "first_line"]


class DataError(Exception):
    """A problem with one data file or directory; ``str(err) == f"{path}: {problem}"``."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, whitespace collapsed (libraries' messages span several lines; a
    DataError is one), or its type name when it has none."""
    text = str(exc).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(exc).__name__

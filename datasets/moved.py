"""Old module paths of the data side, from before the package was arranged by role (issue 24), in one table.

Running an old command (``python -m datasets.prepare_synapse ...``, ``python -m datasets.phantom ...``, ``python -m
datasets.pair_folder ...``) still works: it prints one note naming the new path and runs the new module with the
same arguments. Importing an old module fails with one line naming where its contents went. One meta-path finder
(installed by ``datasets/__init__.py``, consulted only for names no file answers) does both, instead of a shim file
per old name.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import runpy
import sys

__all__ = ["MOVED", "COMMANDS", "MovedModuleFinder", "install", "run_moved"]

_SETS = ("synapse", "acdc", "isic2018", "segpc2021", "busi", "bus", "glas", "ham10000")
# Old command-line modules -> the module that now runs (``python -m NEW``).
COMMANDS = {
    "datasets.phantom": "datasets.phantoms",
    "datasets.pair_folder": "datasets.io.pairs",
    **{f"datasets.prepare_{name}": f"datasets.prepare.{name}" for name in _SETS},
}
# Every old module -> where its contents are now (a module path, or several for a module that was split).
MOVED = {
    **COMMANDS,
    **{f"datasets.{name}_phantom": f"datasets.phantoms.{name}" for name in _SETS},
    "datasets.phantom_shapes": "datasets.phantoms.shapes",
    "datasets.ultrasound_phantom": "datasets.phantoms.ultrasound",
    "datasets.binary_sets": "datasets.prepare.binary_sets",
    "datasets.context": "datasets.episodes.providers",
    "datasets.support_sets": "datasets.episodes.support_sets",
    "datasets.support_selection": "datasets.episodes.backends (embeddings), datasets.episodes.cache "
                                  "(cached_embeddings) and datasets.episodes.retrieval (topk_supports)",
    "datasets.dicom": "datasets.io.dicom",
    "datasets.common": "datasets.errors (DataError), datasets.base (ListedSegmentationDataset, load_pair), "
                       "datasets.checks (array checks), datasets.io (npz/h5, NIfTI, lists, atomic writes), "
                       "datasets.argtypes (positive_int), datasets.prepare.splits (split_in_blocks) and "
                       "datasets.acdc (minmax_normalize)",
}


def message(old: str) -> str:
    """One line: where the old module's contents are now."""
    verb = "was split into" if "," in MOVED[old] or " and " in MOVED[old] else "moved to"
    return f"{old} {verb} {MOVED[old]}"


def run_moved(old: str) -> None:
    """``python -m OLD ARGS``: a note naming the new command, then ``python -m NEW ARGS`` (its exit status)."""
    new = COMMANDS[old]
    print(f"note: `python -m {old}` is now `python -m {new}`", file=sys.stderr)
    runpy.run_module(new, run_name="__main__", alter_sys=True)


class MovedModuleLoader(importlib.abc.Loader):
    """Refuses to import an old module (one line naming the new one); gives runpy the code that runs the new
    command in its place."""

    def __init__(self, old: str) -> None:
        self.old = old

    def create_module(self, spec):
        raise ImportError(message(self.old), name=self.old)

    def exec_module(self, module) -> None:  # never reached: create_module refuses
        raise ImportError(message(self.old), name=self.old)

    def get_code(self, fullname: str):
        """The code ``python -m OLD`` runs as ``__main__``."""
        if self.old in COMMANDS:
            source = f"import datasets.moved\ndatasets.moved.run_moved({self.old!r})\n"
        else:
            source = f"raise SystemExit({('error: ' + message(self.old))!r})\n"
        return compile(source, f"<{self.old}>", "exec")


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the old names of :data:`MOVED` (appended to ``sys.meta_path``: files always win)."""

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, MovedModuleLoader(fullname))


def install() -> None:
    """Put one :class:`MovedModuleFinder` on ``sys.meta_path`` (again after a reload: still one)."""
    if not any(type(finder).__name__ == MovedModuleFinder.__name__ for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())

"""Registry of data sets: one :class:`DatasetSpec` per set, declared and registered in ``datasets/<name>.py``.

Everything the engine, the scripts and the tests know about a data set comes from its spec (name, title, classes,
channels, kind, default paths and lists, reader, training transform, phantom writer, preparation module, and the
preprocessing of raw inputs for ``predict.py``), so adding
a data set is one new file plus its import in ``datasets/__init__.py``; no engine file changes.

    from datasets import get_dataset, list_datasets
    spec = get_dataset("synapse")
    train_set = spec.build(spec.root_path, spec.list_dir, spec.train_split, spec.num_classes,
                           transform=spec.train_transform((224, 224)))
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .base import ListedSegmentationDataset, Transform
from .errors import DataError
from .io.lists import MISSING_LIST

DATA_KINDS = ("volume", "image")  # evaluation items: [D, H, W] grey volumes, or single [C, H, W] images
# Units of the surface distances (HD95, ASD): voxel steps, as the benchmark papers report them, or millimetres, from
# the voxel spacing that the evaluation items of a set with geometry carry (their ``spacing`` entry).
DISTANCE_UNITS = ("pixel", "mm")


@dataclass(frozen=True)
class LazyFunction:
    """A function named by ``"package.module:function"``, imported when first called. A spec names its phantom
    writers this way (as it names its preparation by ``prepare_module``): the writers import the spec's module for
    its format, so the spec importing them would make the two modules import each other."""

    target: str

    def __post_init__(self) -> None:
        module, _, name = self.target.partition(":")
        if not module or not name.isidentifier():
            raise ValueError(f"expected 'package.module:function', got {self.target!r}")

    def resolve(self) -> Callable[..., Any]:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)


@dataclass(frozen=True)
class PhantomSpec:
    """How ``python -m datasets.phantoms --dataset NAME --out OUT`` writes a synthetic copy of a data set.

    ``write(data_root, list_dir, seed=..., **options)`` writes the prepared layout under ``OUT/<dir_name>`` and the
    lists under ``OUT/lists/<list_dir_name>`` and returns a dict with at least ``root_path``, ``volume_path`` and
    ``list_dir`` (the values to train and test on), and optionally ``entries`` ({split: list entries}, counted in the
    CLI's report). ``options`` names the keyword counts/sizes it accepts (a subset
    of num_train, num_val, num_valid, num_test, size, depth). ``write_download(src, seed=...)``, when given, writes a
    fake *official download* instead (``--official``), the input of the set's preparation script. Either is a
    function or its name, ``"package.module:function"`` (imported when called: :class:`LazyFunction`).
    """

    dir_name: str
    list_dir_name: str
    write: Callable[..., dict] | str
    options: tuple[str, ...]
    write_download: Callable[..., Any] | str | None = None

    def __post_init__(self) -> None:
        for name in ("write", "write_download"):
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, LazyFunction(getattr(self, name)))


AXIS_CODE_PAIRS = ("LR", "AP", "SI")  # nibabel's axis codes: each voxel axis points towards one letter of a pair


def is_orientation(codes: str) -> bool:
    """True for 3 upper-case axis codes naming each world axis once ('LPS', 'RAS', 'PLI', ...)."""
    found = sorted(index for code in codes for index, pair in enumerate(AXIS_CODE_PAIRS) if code in pair)
    return len(codes) == 3 and found == [0, 1, 2]


@dataclass(frozen=True)
class RawInput:
    """How a raw scan or image of the data set becomes what its evaluation items hold (``predict.py``), with the
    preparation's own functions, so that unlabeled inputs get the preprocessing the model was trained with.

    ``normalize``: raw intensities -> the model's intensities. Volume sets: a raw volume in its file's voxel order
    (x, y, z) -> float32 of the same shape (e.g. CT window and scaling); image sets: uint8 [H, W, 3] -> float32
    [3, H, W] (e.g. ImageNet normalisation).

    Volume sets only: ``orientation`` is the orientation of the voxel axes (x, y, z) of the raw files the set was
    prepared from, as axis codes in nibabel's convention (RAS+ world: 'LPS' = x towards the patient's left, y towards
    posterior, z towards superior); a raw input is reoriented to it (and its prediction back), so that an input
    stored in another voxel order gets the slices the model was trained on. None keeps the stored voxel order (a set
    without one anatomical orientation, e.g. oblique cardiac short-axis stacks). ``slice_axes``: the transpose from
    (x, y, z) to the prepared [D, H, W] (slices along D).

    Image sets only: ``resize(image uint8 [H, W, 3], (height, width))``, the preparation's resize: a raw image is
    resized to the network's input size with it before normalising (the preparations' default size is the network's,
    so that evaluation needs no resampling), and its label map back to the image's size with ``resize_label``
    (nearest).
    """

    normalize: Callable[[Any], Any]
    orientation: str | None = None
    slice_axes: tuple[int, int, int] | None = None
    resize: Callable[[Any, tuple[int, int]], Any] | None = None
    resize_label: Callable[[Any, tuple[int, int]], Any] | None = None
    # Volume sets whose preparation resamples (own data sets): ``scan(data (x, y, z), affine) -> (volume [D, H, W]
    # float32, back)``, the preparation's whole path (reorientation, resampling, intensities), where ``back(array
    # [D, H, W] or [K, D, H, W])`` returns it on the input's voxel grid (x, y, z) / [K, x, y, z]. Replaces
    # ``normalize``, ``orientation`` and ``slice_axes`` for raw volumes.
    scan: Callable[[Any, Any], tuple[Any, Callable[[Any], Any]]] | None = None

    def __post_init__(self) -> None:
        if self.slice_axes is not None and sorted(self.slice_axes) != [0, 1, 2]:
            raise ValueError(f"slice_axes must be a permutation of (0, 1, 2), got {self.slice_axes}")
        if self.orientation is not None and not is_orientation(self.orientation):
            raise ValueError(f"orientation must be 3 axis codes, one of L/R, A/P, S/I each (e.g. 'LPS'), got "
                             f"{self.orientation!r}")


@dataclass(frozen=True)
class DatasetSpec:
    """Everything about one data set. ``class_names`` excludes the background (label 0)."""

    name: str
    title: str
    class_names: tuple[str, ...]
    in_chans: int
    kind: str
    reader: type[ListedSegmentationDataset]
    root_path: str
    volume_path: str
    list_dir: str
    train_split: str
    val_split: str | None
    test_split: str
    train_transform: Callable[[tuple[int, int]], Transform]
    phantom: PhantomSpec | None = None
    prepare_module: str | None = None  # `python -m <prepare_module> --help` converts the official download
    # Optional batch sampler factory for episodic training: (num_items, global_batch, context, seed, drop_singleton)
    # -> a sampler with set_epoch / drops_last / local_batch like utils.distributed.GlobalBatchSampler.
    batch_sampler: Callable[..., Any] | None = None
    # How raw (unprepared) inputs are preprocessed for prediction (predict.py); None: prepared inputs only.
    raw: RawInput | None = None
    # groups(list_dir) -> {case name: group id}: images of one group never support each other (support sets;
    # HAM10000: images of one lesion). None: every image is its own group.
    groups: Callable[[str], dict[str, Any]] | None = None
    # The unit of HD95 / ASD in its evaluation (test.py --distance_unit switches): 'pixel' (the published protocol
    # of the benchmark sets) or 'mm' (its evaluation items carry a ``spacing`` entry, one value per axis).
    distance_unit: str = "pixel"
    # An own data set (datasets.own): its prepared folder; ``name`` is then that absolute path, the identity a run
    # records so that the set is found again (get_dataset resolves folders).
    folder: str | None = None
    # original_grid(case name, array [D, H, W] on the prepared grid) -> (the array on the case's original voxel grid
    # (x, y, z), that grid's affine), or None for a case it does not know: test-time NIfTI exports in each case's
    # own geometry. None: exports on the prepared grid (unit spacing).
    original_grid: Callable[[str, Any], tuple[Any, Any] | None] | None = None

    def __post_init__(self) -> None:
        if self.distance_unit not in DISTANCE_UNITS:
            raise ValueError(f"data set {self.name}: distance_unit must be one of {', '.join(DISTANCE_UNITS)}, got "
                             f"{self.distance_unit!r}")
        if self.kind not in DATA_KINDS:
            raise ValueError(f"data set {self.name}: kind must be one of {', '.join(DATA_KINDS)}, got {self.kind!r}")
        if self.folder is None and self.name != self.name.lower():
            raise ValueError(f"data set names are lower case, got {self.name!r}")

    @property
    def short_name(self) -> str:
        """A name for folders and titles: the registered name, or an own set's folder name (its ``name`` is a path)."""
        return os.path.basename(os.path.normpath(self.folder)) if self.folder else self.name

    @property
    def num_classes(self) -> int:
        """Classes including the background."""
        return len(self.class_names) + 1

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(mean, std) per channel of the items' intensities (from [0, 1]), or None for [0, 1] units: the
        reader's."""
        return self.reader.normalization

    def build(self, base_dir: str | os.PathLike, list_dir: str | os.PathLike, split: str, num_classes: int,
              transform: Transform | None = None, seed: int = 1234) -> ListedSegmentationDataset:
        """The reader of one split (raises DataError for a missing list, folder or listed file; a missing list's
        names the option and the commands that write lists)."""
        try:
            return self.reader(base_dir, list_dir, split, num_classes, transform=transform, seed=seed)
        except DataError as err:
            if err.problem != MISSING_LIST:
                raise
            writers = [f"python -m datasets.phantoms --dataset {self.name} --out DIR (a synthetic set)"] \
                if self.phantom is not None else []
            if self.prepare_module:
                writers.insert(0, f"python -m {self.prepare_module} (from the official download)")
            raise DataError(err.path, f"{MISSING_LIST}; --list_dir names the folder of the lists (here {list_dir})"
                            + (f", written by {' or '.join(writers)}" if writers else "")) from None


_DATASETS: dict[str, DatasetSpec] = {}
# (is_set(folder) -> bool, spec_of(folder) -> DatasetSpec): how a folder given as a data set name becomes a spec
# (datasets.own registers the prepared own-data folders), so that ``--dataset data/NAME`` works as a name does.
_FOLDER_SETS: list[tuple[Callable[[str], bool], Callable[[str], DatasetSpec]]] = []


def register_folder_sets(is_set: Callable[[str], bool], spec_of: Callable[[str], DatasetSpec]) -> None:
    """Let :func:`get_dataset` accept a folder for which ``is_set(folder)`` holds, as ``spec_of(folder)``."""
    _FOLDER_SETS.append((is_set, spec_of))


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the registry (a second spec of the same name replaces the first); returns it."""
    _DATASETS[spec.name] = spec
    return spec


def unregister_dataset(name: str) -> None:
    """Remove a data set (tests that register a toy set clean up with this)."""
    _DATASETS.pop(name, None)


def get_dataset(name: str | os.PathLike) -> DatasetSpec:
    """The spec of ``name`` (any case), or of the prepared data set in folder ``name`` (a registered folder set:
    :func:`register_folder_sets`); ValueError naming the known sets otherwise."""
    key = os.fspath(name).lower()
    if key in _DATASETS:
        return _DATASETS[key]
    path = os.fspath(name)
    if os.path.isdir(path):
        for is_set, spec_of in _FOLDER_SETS:
            if is_set(path):
                return spec_of(path)
        raise ValueError(f"{path} is a folder but not a prepared data set (no dataset_descriptor.json): prepare it "
                         f"with python -m datasets.prepare.own --src {path} --out data/NAME")
    if os.sep in path or (os.altsep and os.altsep in path):  # a folder name (e.g. recorded by a run) that is gone
        raise ValueError(f"data set folder {path} does not exist (moved or deleted?); give --dataset with its folder "
                         f"now, or a registered name: {', '.join(list_datasets())}")
    raise ValueError(f"unknown data set {name!r}; known: {', '.join(list_datasets())}, or the folder of a prepared "
                     f"own data set (python -m datasets.prepare.own)")


def list_datasets() -> list[str]:
    """Registered data set names, sorted."""
    return sorted(_DATASETS)


def build_dataset(name: str, base_dir: str | os.PathLike, list_dir: str | os.PathLike, split: str,
                  num_classes: int, transform: Transform | None = None, seed: int = 1234
                  ) -> ListedSegmentationDataset:
    """``get_dataset(name).build(...)``."""
    return get_dataset(name).build(base_dir, list_dir, split, num_classes, transform=transform, seed=seed)


def build_train_transform(name: str, output_size: Sequence[int]) -> Transform:
    """Training augmentation of data set ``name`` at ``output_size``: callable (image, label, rng) -> tensors."""
    return get_dataset(name).train_transform(tuple(output_size))

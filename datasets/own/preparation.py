"""The preparation of an own data set (``python -m datasets.prepare.own``): find the raw set, choose the splits,
plan what every case shares (labels, intensities and their statistics, slice axes and in-plane spacing, or image
size), prepare the cases one at a time in worker processes, and write the lists and the descriptor.

Everything is written into a temporary folder beside ``out`` that is renamed to ``out`` only when complete, so a
failed or interrupted preparation leaves nothing under ``out``; an existing non-empty ``out`` is refused (a user's
files are never overwritten).
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import DataError
from ..io.lists import write_list
from ..io.staged import check_new_folder, staged_folder
from .cases import Plan, ct_samples, mask_values, prepare_case
from .descriptor import LIST_DIR_NAME, CaseGeometry, ChannelIntensity, Descriptor, write_descriptor
from .formats import RawCase, RawSet, detect_raw_set
from .geometry import (
    CANONICAL_ORIENTATION, canonical_spacing, choose_slice_axes, orientation_codes, target_spacing, voxel_spacing,
)
from .intensity import channel_scheme, ct_intensity
from .splits import DEFAULT_FRACTIONS, DEFAULT_SEED, OWN_SPLITS, choose_splits
from .volumes import read_volume_geometry

__all__ = ["DEFAULT_SIZE", "OwnOptions", "prepare_own", "map_cases"]

DEFAULT_SIZE = 224  # image sets: the networks' input size, so that evaluation needs no resampling (as the RGB sets)
UINT8_MAX = 255
RGB_CHANNEL_NAMES = ("R", "G", "B")


@dataclass(frozen=True)
class OwnOptions:
    """The preparation's options (the command line's)."""

    name: str | None = None
    fold: int = 0
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    seed: int = DEFAULT_SEED
    ct_window: tuple[float, float] | None = None
    size: int = DEFAULT_SIZE
    workers: int = 1
    class_names: tuple[str, ...] | None = None  # plain folders: the class names (their count bounds the masks)
    channels: tuple[int, ...] | None = None  # volume sets: keep these channels (indices of dataset.json's)
    progress: bool = True


def _call(job: tuple[Callable[..., Any], tuple]) -> tuple[str, Any]:
    """Run one job in a worker; a DataError comes back as values (it does not pickle as an exception)."""
    function, args = job
    try:
        return "ok", function(*args)
    except DataError as err:
        return "error", (err.path, err.problem)


def map_cases(function: Callable[..., Any], jobs: Sequence[tuple], workers: int, what: str, progress: bool
              ) -> list[Any]:
    """``[function(*args) for args in jobs]`` in ``workers`` processes (in order), with a progress bar counting
    cases; the first DataError is raised (naming its file) and the rest cancelled."""
    from tqdm import tqdm

    calls = [(function, args) for args in jobs]
    bar = tqdm(total=len(calls), desc=what, unit="case", file=sys.stderr, disable=not progress, leave=True)
    results = []
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 and len(calls) > 1 else None
    try:
        for status, value in (pool.imap(_call, calls) if pool else map(_call, calls)):
            if status == "error":
                raise DataError(*value)
            results.append(value)
            bar.update(1)
    finally:
        bar.close()
        if pool:
            pool.terminate()
            pool.join()
    return results


def _label_plan(raw: RawSet, options: OwnOptions, jobs_workers: int) -> tuple[tuple[int, ...], tuple[str, ...],
                                                                             bool]:
    """(label values, class names, folder masks 0/255) of the set."""
    if raw.format != "folder":
        values = tuple(raw.labels)
        return values, tuple(raw.labels[v] for v in values[1:]), False
    per_case = map_cases(mask_values, [(case, raw) for case in raw.cases], jobs_workers, "reading masks",
                         options.progress)
    found = set().union(*per_case)
    binary = UINT8_MAX in found and found <= {0, UINT8_MAX}
    if UINT8_MAX in found and not binary and not options.class_names:
        case = next(case for case, values in zip(raw.cases, per_case) if UINT8_MAX in values)
        raise DataError(case.label, f"mask value {UINT8_MAX} among class indices {sorted(found - {UINT8_MAX})[:5]} "
                                    f"of the set: binary masks are 0/255, class-index masks 0..K-1 (or give "
                                    f"--class_names)")
    if options.class_names:
        names = tuple(options.class_names)
    elif binary:
        names = ("foreground",)
    else:
        names = tuple(f"class_{index}" for index in range(1, max(max(found), 1) + 1))
    for case, values in zip(raw.cases, per_case):  # the first mask in name order beyond the classes
        top = max(values)
        if not binary and top > len(names):
            raise DataError(case.label, f"mask values up to {top} beyond the class count {len(names) + 1} (classes "
                                        f"0..{len(names)}; binary masks are 0/255)")
    return ((0, UINT8_MAX) if binary else tuple(range(len(names) + 1))), names, binary


def _volume_plan(raw: RawSet, train: Sequence[RawCase], options: OwnOptions, plan: Plan) -> Plan:
    """Slice axes and in-plane target spacing from the training cases' headers, then the CT statistics."""
    spacings = []
    for case in train:
        _, affine = read_volume_geometry(case.images[0])
        spacings.append(canonical_spacing(voxel_spacing(affine), orientation_codes(affine, case.images[0])))
    slice_axes = choose_slice_axes(spacings)
    plan = replace(plan, slice_axes=slice_axes, target_spacing=target_spacing(spacings, slice_axes),
                   intensities=tuple(channel_scheme(name, options.ct_window) for name in _kept_names(raw, plan)))
    ct = [index for index, intensity in enumerate(plan.intensities) if intensity.scheme == "ct"]
    if ct:
        jobs = [(case, raw, plan, options.seed, index) for index, case in enumerate(train)]
        samples = map_cases(ct_samples, jobs, options.workers, "CT statistics", options.progress)
        intensities = list(plan.intensities)
        for index in ct:
            intensities[index] = ct_intensity(plan.intensities[index].name, [s[index] for s in samples])
        plan = replace(plan, intensities=tuple(intensities))
    return plan


def _kept_names(raw: RawSet, plan: Plan) -> tuple[str, ...]:
    return tuple(raw.channel_names) if plan.channels is None else tuple(raw.channel_names[i] for i in plan.channels)


def _checked_channels(raw: RawSet, channels: Sequence[int] | None) -> tuple[int, ...] | None:
    """``--channels``: indices of the raw set's channels (volume sets only); DataError naming dataset.json."""
    if channels is None:
        return None
    where = os.path.join(raw.root, "dataset.json")
    if raw.kind != "volume":
        raise DataError(where, "--channels applies to volume sets (2-D sets are grey or RGB)")
    bad = [index for index in channels if not 0 <= index < len(raw.channel_names)]
    if bad or len(set(channels)) != len(channels):
        raise DataError(where, f"--channels {' '.join(map(str, channels))}: the set's channels are 0.."
                               f"{len(raw.channel_names) - 1} ({', '.join(raw.channel_names)}), each once")
    return tuple(channels)


def _set_name(raw: RawSet, out: str, options: OwnOptions) -> str:
    name = options.name or os.path.basename(os.path.normpath(out))
    return name.lower()


def prepare_own(src: str, out: str, options: OwnOptions = OwnOptions()) -> dict[str, list[str]]:
    """Prepare the raw set in ``src`` into ``out``; returns the list entries per split."""
    raw = detect_raw_set(src, options.class_names)
    out = os.path.normpath(out)
    check_new_folder(out)
    splits, split_source = choose_splits(raw, options.fold, options.fractions, options.seed)
    by_name = {case.name: case for case in raw.cases}
    with staged_folder(out) as tmp:
        label_values, class_names, binary = _label_plan(raw, options, options.workers)
        plan = Plan(label_values=label_values, out=tmp, binary_255=binary,
                    channels=_checked_channels(raw, options.channels))
        if raw.kind == "volume":
            plan = _volume_plan(raw, [by_name[name] for name in splits["train"]], options, plan)
        else:
            plan = replace(plan, image_size=(options.size, options.size),
                           intensities=tuple(ChannelIntensity(name, "rgb") for name in RGB_CHANNEL_NAMES))
        first_split = {}
        for split in OWN_SPLITS:  # a case in val and test (a fold's val as test) is prepared once
            for name in splits[split]:
                first_split.setdefault(name, split)
        jobs = [(by_name[name], raw, plan, split) for name, split in first_split.items()]
        results = dict(zip(first_split, map_cases(prepare_case, jobs, options.workers, "preparing",
                                                  options.progress)))
        entries = {split: [entry for name in splits[split] for entry in results[name][1]] for split in OWN_SPLITS}
        cases = {name: CaseGeometry(split=split, source=by_name[name].label, **results[name][0])
                 for name, split in first_split.items()}
        for split, names in entries.items():
            if names:
                write_list(os.path.join(tmp, LIST_DIR_NAME, f"{split}.txt"), names)
        write_descriptor(tmp, _descriptor(raw, out, options, plan, splits, split_source, class_names, cases))
    return {split: names for split, names in entries.items() if names}


def _descriptor(raw: RawSet, out: str, options: OwnOptions, plan: Plan, splits: dict[str, list[str]],
                split_source: str, class_names: tuple[str, ...], cases: dict[str, CaseGeometry]) -> Descriptor:
    volume = raw.kind == "volume"
    if volume:
        shapes = [cases[name].prepared_shape[1:] for name in splits["train"]]
        image_size = tuple(int(n) for n in np.median(np.asarray(shapes), axis=0).round())
        intensities, in_chans = plan.intensities, len(plan.intensities)
    else:
        image_size = plan.image_size
        intensities, in_chans = plan.intensities, len(RGB_CHANNEL_NAMES)
    return Descriptor(
        name=_set_name(raw, out, options), kind=raw.kind, source_format=raw.format, class_names=class_names,
        label_values=plan.label_values, channel_names=_kept_names(raw, plan), in_chans=in_chans, intensity=intensities,
        splits={split: tuple(names) for split, names in splits.items()}, split_source=split_source, cases=cases,
        file_ending=raw.file_ending, orientation=CANONICAL_ORIENTATION if volume else None, slice_axes=plan.slice_axes,
        target_spacing=plan.target_spacing, image_size=image_size,
        extra={"source": os.path.abspath(raw.root), "notes": list(raw.notes)})

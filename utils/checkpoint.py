"""Atomic file writing, training checkpoints and rebuilding a model from a checkpoint.

Every file the pipeline writes goes through :func:`atomic_write_bytes` (the project's one atomic writer,
:mod:`datasets.io.atomic`: a temporary name in the same directory, then ``os.replace``), so an interrupted run never
leaves a half-written file under a final name.

A checkpoint is a plain dict saved with ``torch.save`` and loaded with ``weights_only=True`` (no arbitrary pickles):

    format, arch, model, model_config, model_extra, optimizer, scaler, next_epoch, global_step, best_val_dice,
    best_test_dice, validations_since_best, rng, options

``arch`` is the registered model name and ``model_config`` its full config, so ``create_model(arch, **config)``
rebuilds the network; ``model_extra`` is the model's ``extra_state()``; ``options`` holds the training run's option
groups (run, model_options, train_options, context_options, recipe: ``utils.config``), read back with
``utils.config.saved_options``. Files of an older format are converted on load, one format at a time, by the
converter registered for it (``networks.registry.register_checkpoint_upgrade``): ``sim-mpnet/1`` (before the model
registry) by Sim-MPNet's family into ``sim-mpnet/2``, whose flat option dict ``args`` the engine's converter
(``utils.config.nest_flat_options``) turns into the groups of ``sim-mpnet/3``. A bare weights file of a foreign
layout (e.g. a released state_dict of another codebase) goes to the importer a family registered for it
(``networks.registry.register_weights_importer``): it supplies arch, model_config and the weights, so that such a
file is tested or applied like a checkpoint (it has no ``options``: no training run, no optimizer).

A checkpoint is verified before it is written and when it is loaded: every floating-point weight and buffer of
``model`` finite (a diverged run's weights never replace good ones), and ``content_sha256`` (the SHA-256 of its
content, every tensor's bytes included: :func:`content_hash`) matching its content, so that a damaged file (a flipped
bit) is one error naming it instead of a model with one weight at 3e36. Files written before the hash load as before.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets.io.atomic import (  # the one atomic writer (re-exported)
    atomic_write_all, atomic_write_bytes, atomic_write_text,
)

CHECKPOINT_FORMAT = "sim-mpnet/3"  # utils.config.NESTED_OPTIONS_FORMAT
REQUIRED_KEYS = ("format", "model", "model_config")  # and "arch" from the second format on
HASH_KEY = "content_sha256"


class CheckpointError(Exception):
    """A checkpoint that cannot be used; ``str()`` is ``"<path>: <problem>"`` like ``datasets.errors.DataError``."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


# ----------------------------------------------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------------------------------------------
def json_safe(value: Any) -> Any:
    """Recursively turn numpy scalars/arrays, paths and non-finite floats (-> None) into plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON (NaN/inf become null so the file stays valid JSON)."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` into memory, then :func:`atomic_write_bytes`."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


# ----------------------------------------------------------------------------------------------------------------
# RNG state (stored as tensors / plain python values so that ``weights_only=True`` loading accepts it)
# ----------------------------------------------------------------------------------------------------------------
def capture_rng_state() -> dict:
    """Python, numpy, torch CPU and (when present) CUDA generator states."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------
def model_checkpoint(model: torch.nn.Module) -> dict:
    """The part of a checkpoint that rebuilds a registered model: arch, weights, config, extra state."""
    if not model.arch:
        raise ValueError(f"{type(model).__name__} names no registered architecture: build it with create_model")
    return {"arch": model.arch, "model": model.state_dict(), "model_config": dataclasses.asdict(model.config),
            "model_extra": model.extra_state()}


def content_hash(ckpt: Mapping[str, Any]) -> str:
    """SHA-256 of a checkpoint's content (all but its own ``content_sha256``): every tensor's dtype, shape and bytes
    and every other value's repr, dict keys in sorted order (lists and tuples alike: a load may turn one into the
    other)."""
    digest = hashlib.sha256()

    def add(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, Mapping):
            digest.update(b"{")
            for key in sorted(value, key=repr):
                if key != HASH_KEY:
                    digest.update(repr(key).encode() + b":")
                    add(value[key])
            digest.update(b"}")
        elif isinstance(value, (list, tuple)):
            digest.update(b"[")
            for item in value:
                add(item)
            digest.update(b"]")
        else:
            digest.update(repr(value).encode() + b",")

    add(ckpt)
    return digest.hexdigest()


def nonfinite_weights(ckpt: Mapping[str, Any]) -> tuple[int, int, list[str]]:
    """(non-finite values, floating-point values, names of the tensors holding them) of ``ckpt['model']``."""
    bad, total, names = 0, 0, []
    for name, tensor in (ckpt.get("model") or {}).items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            count = int((~torch.isfinite(tensor)).sum())
            bad, total = bad + count, total + tensor.numel()
            if count:
                names.append(name)
    return bad, total, names


def nonfinite_problem(ckpt: Mapping[str, Any]) -> str | None:
    """``"N of M weight values are not finite (in a, b, ...)"``, or None when every one is finite."""
    bad, total, names = nonfinite_weights(ckpt)
    if not bad:
        return None
    return (f"{bad:,} of {total:,} weight values are not finite (NaN or inf; in {', '.join(names[:3])}"
            f"{' ...' if len(names) > 3 else ''})")


def checkpoint_bytes(path: str | os.PathLike, state: Mapping[str, Any]) -> bytes:
    """The file content of a checkpoint dict: format stamped, content hash added; FloatingPointError naming ``path``
    and the step when a weight is not finite (nothing is written)."""
    ckpt = {"format": CHECKPOINT_FORMAT, **state}
    problem = nonfinite_problem(ckpt)
    if problem:
        where = f" at step {ckpt['global_step']}" if "global_step" in ckpt else ""
        raise FloatingPointError(f"{path}: not written: the weights diverged{where}: {problem}; the files already "
                                 f"there are kept")
    ckpt[HASH_KEY] = content_hash(ckpt)
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return buffer.getvalue()


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Save a checkpoint dict atomically, stamping the format version and the content hash (verified first)."""
    atomic_write_bytes(path, checkpoint_bytes(path, state))


def save_checkpoint_set(paths: list[str | os.PathLike], state: Mapping[str, Any]) -> None:
    """Save one checkpoint under several names as one set (:func:`datasets.io.atomic.atomic_write_all`): nothing is
    replaced before every file is complete, and ``paths[0]`` (a run's last.pth) is replaced last."""
    data = checkpoint_bytes(paths[0], state)
    atomic_write_all({path: data for path in paths})


def checkpoint_identity(ckpt: Mapping[str, Any]) -> dict:
    """What identifies the state a checkpoint holds: epochs trained, optimizer step, run id and content hash."""
    return {"epochs": ckpt.get("next_epoch"), "step": ckpt.get("global_step"), "run_id": ckpt.get("run_id"),
            "sha256": ckpt.get(HASH_KEY) or content_hash(ckpt)}


def describe_checkpoint(ckpt: Mapping[str, Any]) -> str:
    """``"epochs 2, step 40, sha256 <hex>"`` (what a checkpoint records of these) for logs and reports."""
    identity = checkpoint_identity(ckpt)
    return ", ".join(f"{key} {identity[key]}" for key in ("epochs", "step", "sha256") if identity[key] is not None)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load and sanity-check a checkpoint written by :func:`save_checkpoint`.

    Raises :class:`CheckpointError` naming the file for a missing, truncated/corrupt or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/corrupt/unsafe files
        raise CheckpointError(path, f"cannot read checkpoint (corrupt or not a PyTorch file): "
                                    f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if isinstance(ckpt, dict) and HASH_KEY in ckpt and ckpt[HASH_KEY] != content_hash(ckpt):
        raise CheckpointError(path, f"content does not match its {HASH_KEY} (the file was damaged or altered after "
                                    f"it was written): use another checkpoint")
    ckpt = import_foreign_weights(ckpt, path)
    if not isinstance(ckpt, dict) or not all(key in ckpt for key in REQUIRED_KEYS):
        raise CheckpointError(path, "not a checkpoint of this codebase (expected a dict with "
                                    f"{', '.join(REQUIRED_KEYS)}; a bare state_dict or another model's file? No "
                                    f"registered weights importer recognises it either)")
    ckpt = upgrade_checkpoint(ckpt)
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(path, f"unsupported checkpoint format {ckpt['format']!r} "
                                    f"(this code writes {CHECKPOINT_FORMAT!r})")
    if not isinstance(ckpt.get("arch"), str):
        raise CheckpointError(path, "checkpoint names no model architecture ('arch')")
    problem = nonfinite_problem(ckpt)
    if problem:
        raise CheckpointError(path, f"{problem}: the run had diverged when this was written; use another checkpoint")
    return ckpt


def import_foreign_weights(obj: Any, path: str | os.PathLike) -> Any:
    """``obj`` (what torch.load returned) as a checkpoint dict when it is a bare weights file that a registered
    importer recognises (stamped with the current format and ``imported_by`` = the importer's name; its conversion
    errors become one CheckpointError naming the file); anything else unchanged, for the caller to check."""
    if isinstance(obj, dict) and all(key in obj for key in REQUIRED_KEYS):
        return obj
    from networks.registry import find_weights_importer  # local import: keeps `import utils.checkpoint` light

    importer = find_weights_importer(obj)
    if importer is None:
        return obj
    try:
        converted = importer.convert(obj)
    except ValueError as exc:
        raise CheckpointError(path, str(exc)) from exc
    return {"format": CHECKPOINT_FORMAT, **converted, "imported_by": importer.name}


def upgrade_checkpoint(ckpt: dict) -> dict:
    """``ckpt`` in the current format: an older format goes through its registered converter, and the result
    through the next one, until the current format (or one without a converter, which the caller reports)."""
    if ckpt.get("format") == CHECKPOINT_FORMAT:
        return ckpt
    # local imports: keep `import utils.checkpoint` light; utils.config registers the engine's own converter
    import utils.config  # noqa: F401
    from networks.registry import checkpoint_upgrade

    seen = set()
    while ckpt.get("format") != CHECKPOINT_FORMAT and ckpt.get("format") not in seen:
        seen.add(ckpt.get("format"))
        upgrade = checkpoint_upgrade(ckpt.get("format"))
        if upgrade is None:
            break
        ckpt = upgrade(ckpt)
    return ckpt


def peek_arch(path: str | os.PathLike) -> str | None:
    """The ``arch`` a checkpoint names (after format conversion), or None when it cannot be read; the tensors are
    memory-mapped, not read. Parsers use it to declare the right model's options; loading reports errors."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - unreadable here is reported by the real load, with its reason
        return None
    try:
        ckpt = import_foreign_weights(ckpt, path)
    except CheckpointError:  # a damaged foreign file: its importer's model, whose load then reports the problem
        from networks.registry import find_weights_importer  # local import: keeps `import utils.checkpoint` light

        return find_weights_importer(ckpt).arch
    except Exception:  # noqa: BLE001 - reported by the real load, with its reason
        return None
    return upgrade_checkpoint(ckpt).get("arch") if isinstance(ckpt, dict) else None


def config_mismatches(saved: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """``["key: checkpoint has A, requested B", ...]`` for every requested (non-None) value that differs."""
    problems = []
    for key, want in requested.items():
        if want is None:
            continue
        have = saved.get(key, "<absent>")
        if have != want:
            problems.append(f"{key}: checkpoint has {have!r}, requested {want!r}")
    return problems


def check_model_config(path: str | os.PathLike, saved: Mapping[str, Any], requested: Mapping[str, Any]) -> None:
    """Raise :class:`CheckpointError` when a requested architecture setting contradicts the checkpoint."""
    problems = config_mismatches(saved, requested)
    if problems:
        raise CheckpointError(path, "checkpoint does not match the requested model: " + "; ".join(problems))


def load_model_state(model: torch.nn.Module, ckpt: Mapping[str, Any], path: str | os.PathLike) -> None:
    """``model.load_state_dict(ckpt['model'])`` (strict, after the model's ``upgrade_state_dict``) and its extra
    state, turning key/shape mismatches into one CheckpointError."""
    try:
        model.load_state_dict(model.upgrade_state_dict(dict(ckpt["model"])), strict=True)
        model.load_extra_state(ckpt.get("model_extra") or {})
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise CheckpointError(path, f"weights do not fit the model built from its config: {detail[:500]}") from exc


def saved_model_config(ckpt: Mapping[str, Any], path: str | os.PathLike) -> dict:
    """The checkpoint's model config with every field of the family's current config: fields added after the file
    was written take their defaults (the values the older code had as constants)."""
    from networks.registry import model_config  # local import: keeps `import utils.checkpoint` light

    try:
        return dataclasses.asdict(model_config(ckpt["arch"], **ckpt["model_config"]))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(path, f"arch {ckpt['arch']!r} and model_config cannot build a model: {exc}") from exc


def build_model_from_checkpoint(path: str | os.PathLike, requested: Mapping[str, Any] | None = None,
                                map_location: str | torch.device = "cpu",
                                arch: str | None = None) -> tuple[torch.nn.Module, dict]:
    """``create_model(ckpt['arch'], **ckpt['model_config'], pretrained=False)`` with its weights loaded.

    ``requested`` holds architecture settings given on the command line (None = take the checkpoint's) and ``arch``
    a model name asked for; any contradiction raises :class:`CheckpointError`. Returns ``(model, checkpoint_dict)``.
    """
    from networks import create_model  # local import: keeps `import utils.checkpoint` light

    ckpt = load_checkpoint(path, map_location=map_location)
    if arch is not None and arch != ckpt["arch"]:
        raise CheckpointError(path, f"checkpoint holds a {ckpt['arch']!r} model, requested {arch!r}")
    config = saved_model_config(ckpt, path)
    check_model_config(path, config, requested or {})
    try:
        model = create_model(ckpt["arch"], pretrained=False, **config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(path, f"arch {ckpt['arch']!r} and model_config cannot build a model: {exc}") from exc
    load_model_state(model, ckpt, path)
    return model, ckpt

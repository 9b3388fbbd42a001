"""A checkpoint's network exported for viewers and servers (``export.py``): ONNX (checked with onnxruntime) or a
``torch.export`` program (``.pt2``), with a JSON beside it that says how to feed it and read it.

What is exported is the function the engine's inference applies to a batch of network inputs (in eval mode: for
Sim-MPNet the memory phase, its memory bank frozen in the graph): image ``[B, C, s, s]`` in the model's input
normalisation (plus, for a support-set model, ``k`` supports of fixed count: ``support_images [B, k, C, s, s]``,
``support_labels [B, k, s, s]`` int64) -> ``logits [B, K, s, s]``, the summed heads' class scores whose argmax over
K is the label map (``utils.inference.class_scores`` without TTA). The preprocessing from a raw scan or image to that
input (the data set's intensity normalisation, orientation and slicing of volumes, resize) is written in the JSON.

Parity is checked on export, before anything is written where it was asked: the exported network's logits on fixed
inputs (seeded normal values, two batch sizes where the batch axis is dynamic) equal the eager model's within
``max |exported - eager| <= TOLERANCE * max(1, max |eager|)``: relative to the scale of the logits, because float32
kernels of two runtimes sum in other orders, and a deep network's near-zero logits carry the absolute error of its
large ones. A failed check or an export the exporter refuses (an operator it
has no translation for) is one error line naming the model and the reason, and nothing is written.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets.errors import first_line
from datasets.io.atomic import atomic_path, atomic_write_text
from datasets.registry import DatasetSpec
from utils.batch_context import context_options, model_context
from utils.checkpoint import CheckpointError, build_model_from_checkpoint
from utils.config import saved_options
from utils.evaluator import class_labels
from utils.inference import IMAGE_ZOOM_ORDER, LABEL_ZOOM_ORDER, sum_of_heads
from utils.model_input import model_input_conversion
from utils.predict.segmenter import checkpoint_dataset

__all__ = ["FORMATS", "TOLERANCE", "ExportConfig", "NetworkLogits", "export", "export_network", "parity"]

FORMATS = ("onnx", "torch_export")
TOLERANCE = 1e-3  # max |exported - eager| over max(1, max |eager|) of the logits (float32 on the CPU)


@dataclass
class ExportConfig:
    """An export (the options of ``export.py``)."""

    checkpoint: str
    format: str
    out: str
    dataset: str | None = None  # whose preprocessing the JSON describes; None: the checkpoint's training set
    support_size: int | None = None  # support-set models: k (None: the checkpoint's)
    overwrite: bool = False
    seed: int = 0  # of the parity inputs
    batch_size: int = 2  # of the export's example input: the batch of a static export (>= 2 for a dynamic one)


class NetworkLogits(torch.nn.Module):
    """The engine's inference function of a batch as a module: ``(image, *context) -> summed heads' logits``."""

    def __init__(self, model: torch.nn.Module, context_keys: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.model, self.context_keys = model, tuple(context_keys)

    def forward(self, image: torch.Tensor, *context: torch.Tensor) -> torch.Tensor:
        return sum_of_heads(self.model.forward_batch({"image": image, **dict(zip(self.context_keys, context))}))


def example_inputs(model: torch.nn.Module, batch: int, k: int | None, seed: int) -> dict[str, torch.Tensor]:
    """Fixed inputs of ``batch`` items: the image (seeded normal values) and the model's context entries (its
    ``example_context`` shapes with ``k`` along the support axis; images normal, labels uniform over the classes)."""
    generator = torch.Generator().manual_seed(seed)
    size = model.img_size
    image = torch.randn(batch, model.in_chans, size, size, generator=generator)
    inputs = {"image": image}
    for key, blank in model.example_context(image).items():
        shape = (batch, k, *blank.shape[2:]) if k is not None else tuple(blank.shape)
        inputs[key] = (torch.randn(shape, generator=generator) if blank.is_floating_point()
                       else torch.randint(0, model.num_classes, shape, generator=generator, dtype=blank.dtype))
    return inputs


def export_onnx(network: NetworkLogits, inputs: dict[str, torch.Tensor], path: str) -> str:
    """ONNX with a dynamic batch axis: the TorchScript exporter, else torch.export's (dynamo); returns which."""
    names = list(inputs)
    errors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation and tracer warnings: the parity check is the judge
        try:
            torch.onnx.export(network, tuple(inputs.values()), path, input_names=names, output_names=["logits"],
                              dynamic_axes={name: {0: "batch"} for name in [*names, "logits"]}, dynamo=False)
            return "torch.onnx (TorchScript)"
        except Exception as exc:  # noqa: BLE001 - any exporter failure is reported with the next one's
            errors.append(f"TorchScript exporter: {first_line(exc)}")
        try:
            torch.onnx.export(network, tuple(inputs.values()), path, input_names=names, output_names=["logits"],
                              dynamo=True)
            return "torch.onnx (dynamo)"
        except Exception as exc:  # noqa: BLE001
            errors.append(f"dynamo exporter: {innermost_line(exc)}")
    raise RuntimeError("; ".join(errors))


def innermost_line(exc: BaseException) -> str:
    """The first line of the deepest cause (exporters wrap the operator's own message in several layers)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return first_line(exc)


def export_torch(network: NetworkLogits, inputs: dict[str, torch.Tensor], path: str) -> str:
    """A ``torch.export`` program (``torch.export.load`` reads it), batch axis dynamic where the model allows."""
    args = tuple(inputs.values())
    try:
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(network, args, dynamic_shapes=tuple({0: batch} for _ in args))
        kind = "torch.export (dynamic batch)"
    except Exception:  # noqa: BLE001 - a batch-specialising model: exported for the example's batch
        program = torch.export.export(network, args)
        kind = f"torch.export (static batch {args[0].shape[0]})"
    torch.export.save(program, path)
    return kind


def run_exported(form: str, path: str, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    """The exported network's logits on ``inputs`` (onnxruntime for ONNX, on the CPU)."""
    if form == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        feed = {item.name: value.numpy() for item, value in zip(session.get_inputs(), inputs.values())}
        return session.run(None, feed)[0]
    program = torch.export.load(path)
    with torch.no_grad():
        return program.module()(*inputs.values()).numpy()


def tolerance_of(eager: np.ndarray) -> float:
    return TOLERANCE * max(1.0, float(np.abs(eager).max()))


def parity(form: str, path: str, network: NetworkLogits, input_sets: list[dict[str, torch.Tensor]]) -> dict:
    """Exported vs eager logits on each input set: the largest absolute difference, the largest difference beyond
    the tolerance (<= 0 passes), the share of pixels whose argmax agrees."""
    worst, excess, agree, pixels, scale = 0.0, -np.inf, 0, 0, 0.0
    for inputs in input_sets:
        with torch.no_grad():
            eager = network(*inputs.values()).numpy()
        exported = np.asarray(run_exported(form, path, inputs))
        if exported.shape != eager.shape:
            raise RuntimeError(f"exported output has shape {exported.shape}, the model's {eager.shape}")
        difference = np.abs(exported.astype(np.float64) - eager)
        scale = max(scale, float(np.abs(eager).max()))
        worst = max(worst, float(difference.max()))
        excess = max(excess, float(difference.max() - tolerance_of(eager)))
        agree += int((exported.argmax(1) == eager.argmax(1)).sum())
        pixels += eager.shape[0] * int(np.prod(eager.shape[2:]))
    return {"max_abs_difference": worst, "tolerance": f"max |exported - eager| <= {TOLERANCE:g} * max(1, max |eager|)",
            "max_abs_logit": scale,
            "passed": bool(excess <= 0), "argmax_agreement": agree / pixels,
            "inputs": [{key: list(value.shape) for key, value in inputs.items()} for inputs in input_sets]}


def export_network(form: str, network: NetworkLogits, inputs: dict[str, torch.Tensor], out: Path,
                   check_inputs: list[dict[str, torch.Tensor]], what: str) -> tuple[str, dict]:
    """Export ``network`` to ``out`` (atomically, only once its parity holds): (exporter, parity record). One-line
    RuntimeError naming ``what`` when the exporter refuses it or the parity fails."""
    with tempfile.TemporaryDirectory(prefix="export_") as scratch:
        staged = os.path.join(scratch, out.name)
        try:
            exporter = (export_onnx if form == "onnx" else export_torch)(network, inputs, staged)
        except Exception as exc:  # noqa: BLE001 - the exporter's refusal, as one line
            raise RuntimeError(f"{what} cannot be exported to {form}: {first_line(exc)}") from exc
        if "static" in exporter:  # one batch size only: the other sets do not apply
            check_inputs = [inputs]
        try:
            record = parity(form, staged, network, check_inputs)
        except Exception as exc:  # noqa: BLE001 - e.g. onnxruntime lacking a kernel for an exported operator
            raise RuntimeError(f"{what} exported to {form} does not run: {first_line(exc)}") from exc
        if not record["passed"]:
            raise RuntimeError(f"{what} exported to {form} differs from the eager model: max |difference| "
                               f"{record['max_abs_difference']:.3g} beyond {record['tolerance']}")
        with atomic_path(out) as final:
            shutil.move(staged, final)  # a copy where the scratch folder is on another file system (tmpfs /tmp)
    return exporter, record


def preprocessing(spec: DatasetSpec, model: torch.nn.Module) -> dict[str, Any]:
    """From a raw scan or image to the network's input, as predict.py does it (utils.predict)."""
    raw, conversion, size = spec.raw, model_input_conversion(spec, model), model.img_size
    steps: dict[str, Any] = {"kind": spec.kind}
    if raw is not None:
        steps["intensity"] = describe_function(raw.normalize)
    if spec.kind == "volume":
        steps.update(orientation=None if raw is None else raw.orientation,
                     slice_axes=None if raw is None else list(raw.slice_axes),
                     slices=f"each slice [H, W] resized to {size} x {size} (spline order {IMAGE_ZOOM_ORDER}), the "
                            f"labels back to H x W (order {LABEL_ZOOM_ORDER}, nearest)")
    elif raw is not None and raw.resize is not None:
        steps.update(resize=describe_function(raw.resize), resize_labels_back=describe_function(raw.resize_label))
    mean_std = spec.normalization
    steps["data_normalization"] = ("[0, 1] units" if mean_std is None
                                   else {"mean": list(mean_std[0]), "std": list(mean_std[1]), "of": "[0, 1] units"})
    steps["model_input"] = ("the data set's normalisation" if conversion is None
                            else {"description": conversion.describe(), **dataclasses.asdict(conversion)})
    return steps


def describe_function(function: Any) -> str:
    doc = (function.__doc__ or "").strip().splitlines()
    return f"{function.__module__}.{function.__qualname__}" + (f": {doc[0]}" if doc else "")


def export(config: ExportConfig) -> dict:
    """Export ``config.checkpoint`` (see the module docstring); returns the JSON record written beside it."""
    if config.format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {config.format!r}")
    out = Path(config.out)
    sidecar = out.with_name(out.name + ".json")
    for path in (out, sidecar):
        if path.exists() and not config.overwrite:
            raise ValueError(f"{path} exists; give another --out or --overwrite")
    model, ckpt = build_model_from_checkpoint(config.checkpoint, map_location="cpu")
    model.eval()
    trained = saved_options(ckpt)
    spec = checkpoint_dataset(config.checkpoint, config.dataset, trained, [])
    provider = model_context(model.arch)
    k = None
    if provider is None and config.support_size is not None:
        raise ValueError(f"--support_size {config.support_size}: {model.arch} takes no support set")
    if provider is not None:
        k = context_options(provider, trained.context_options, {"support_size": config.support_size}).support_size
    if config.batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {config.batch_size}")
    inputs = example_inputs(model, config.batch_size, k, config.seed)
    network = NetworkLogits(model, tuple(inputs)[1:]).eval()
    other_batch = 1 if config.batch_size > 1 else 2  # a dynamic batch axis is checked at another size too
    check_inputs = [inputs, example_inputs(model, other_batch, k, config.seed + 1)]
    try:
        exporter, record = export_network(config.format, network, inputs, out, check_inputs, model.arch)
    except RuntimeError as exc:
        raise CheckpointError(config.checkpoint, str(exc)) from exc
    size, channels = model.img_size, model.in_chans
    description = {
        "format": config.format, "file": out.name, "exporter": exporter, "torch": torch.__version__,
        "model": model.arch, "model_config": json.loads(json.dumps(dataclasses.asdict(model.config), default=str)),
        "checkpoint": str(config.checkpoint), "checkpoint_sha256": ckpt.get("content_sha256"),
        "dataset": spec.name,
        "input": {"name": "image", "shape": ["batch", channels, size, size], "dtype": "float32",
                  "size": size, "channels": channels},
        "context": {name: {"shape": ["batch", *value.shape[1:]], "dtype": str(value.dtype).removeprefix("torch.")}
                    for name, value in list(inputs.items())[1:]},
        "support_size": k,
        "output": {"name": "logits", "shape": ["batch", model.num_classes, size, size], "dtype": "float32",
                   "labels": "argmax over axis 1 (class index; 0 = background)"},
        "classes": ["background", *class_labels(spec.class_names, model.num_classes)],
        "preprocessing": preprocessing(spec, model),
        "parity": record,
    }
    atomic_write_text(sidecar, json.dumps(description, indent=2) + "\n")
    return description

"""The Python API's segment() against predict.py on the same files, in one process: seconds per input.

    python benchmarks/bench_api.py --model sim_mpnet --dataset synapse --count 8
    python benchmarks/bench_api.py --model unet --dataset isic2018 --count 16

A random-init model of the family (pretrained parts off, the data set's constants) is saved with ``args.dataset``
as training would, and ``--count`` phantom inputs are written (CT volumes of ``--depth`` slices of ``--size`` pixels
stored in the training orientation; or PNG images of ``--size`` x 3/4 ``--size``). Timed, each ``--repeats`` times
in alternation (the best of the repeats is reported; the machine may be shared):

* ``predict``: ``utils.predict.main`` (predict.py) on the folder: its whole run (checkpoint load, reads, network,
  writes), divided by the number of inputs;
* ``segmenter``: ``api.Segmenter.from_checkpoint`` once, then ``segment(path)`` per input (load included);
* ``segment_call``: ``api.segment(path, checkpoint)`` per input, the checkpoint loaded in every call.

Every segment() result is checked against predict.py's label map (voxel for voxel). The record goes to
``benchmarks/results/<tag>_api_<model>_<dataset>.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import api  # noqa: E402
from datasets import get_dataset  # noqa: E402
from datasets.phantoms.synapse import synapse_case  # noqa: E402
from datasets.prepare.synapse import HU_MAX, HU_MIN  # noqa: E402
from networks import create_model  # noqa: E402
from utils.checkpoint import atomic_write_json, model_checkpoint, save_checkpoint  # noqa: E402
from utils.predict import main as predict_main  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sim_mpnet")
    parser.add_argument("--dataset", default="synapse")
    parser.add_argument("--count", type=int, default=8, help="inputs")
    parser.add_argument("--size", type=int, default=256, help="slice / image size in pixels")
    parser.add_argument("--depth", type=int, default=16, help="slices per volume")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tag", default="cpu2")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a model option (int where it parses), e.g. --option scale=pico --option warmup_iters=0")
    return parser.parse_args(argv)


def write_inputs(folder: Path, kind: str, count: int, size: int, depth: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for index in range(count):
        rng = np.random.default_rng([7, index])
        if kind == "volume":
            image, _ = synapse_case(rng, size, depth)  # [z, x, y] in [0, 1]
            hu = np.round(HU_MIN + image * (HU_MAX - HU_MIN)).astype(np.int16).transpose(1, 2, 0)
            affine = np.diag([-0.8, -0.8, 2.5, 1.0])
            paths.append(folder / f"case{index:03d}.nii.gz")
            nib.save(nib.Nifti1Image(hu, affine), paths[-1])
        else:
            picture = rng.integers(0, 256, (size * 3 // 4, size, 3), dtype=np.uint8)
            paths.append(folder / f"image{index:03d}.png")
            Image.fromarray(picture).save(paths[-1])
    return paths


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = get_dataset(args.dataset)
    root = Path(tempfile.mkdtemp(prefix="bench_api_"))
    options = {name: int(value) if value.isdigit() else value
               for name, value in (item.split("=", 1) for item in args.option)}
    model = create_model(args.model, pretrained=False, dataset=spec.name, num_classes=spec.num_classes,
                         in_chans=spec.in_chans, **options)
    state = model_checkpoint(model.eval())
    state["args"] = {"dataset": spec.name}
    checkpoint = root / "model.pth"
    save_checkpoint(checkpoint, state)
    inputs = write_inputs(root / "inputs", spec.kind, args.count, args.size, args.depth)
    timings: dict[str, list[float]] = {"predict": [], "segmenter": [], "segment_call": []}
    for repeat in range(args.repeats):
        out = root / f"out{repeat}"
        start = time.perf_counter()
        assert predict_main(["--checkpoint", str(checkpoint), "--input", str(root / "inputs"), "--output", str(out),
                             "--device", "cpu"]) == 0
        timings["predict"].append((time.perf_counter() - start) / len(inputs))
        start = time.perf_counter()
        segmenter = api.Segmenter.from_checkpoint(checkpoint, device="cpu")
        results = [segmenter.segment(path) for path in inputs]
        timings["segmenter"].append((time.perf_counter() - start) / len(inputs))
        start = time.perf_counter()
        api.segment(inputs[0], checkpoint, device="cpu")
        timings["segment_call"].append(time.perf_counter() - start)
        for path, labels in zip(inputs, results):
            written = out / path.name  # predict.py keeps the input's name (and format: PNG / NIfTI)
            expected = np.asarray(Image.open(written) if spec.kind == "image" else nib.load(written).dataobj)
            assert np.array_equal(labels, expected), f"{path}: segment() differs from predict.py"
    record = {"model": args.model, "options": options, "dataset": spec.name, "inputs": len(inputs),
              "size": args.size, "depth": args.depth if spec.kind == "volume" else None, "threads": args.threads,
              "seconds_per_input": {name: min(values) for name, values in timings.items()}, "all": timings,
              "equal_to_predict_py": True}
    print(json.dumps(record, indent=2))
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / f"{args.tag}_api_{args.model}_{spec.name}.json", record)
    return record


if __name__ == "__main__":
    main()

"""Time the vectorised Sim-MPNet against the loop reference (tests/reference.py) in one run.

    python benchmarks/bench_model.py --scale small --img_size 256 --batch 2 --device cpu --json runs/bench.json
    python benchmarks/bench_model.py --what dmwla --batch 4 --threads 2
    python benchmarks/bench_model.py --what volume --device cuda

--what model: a training step (forward, multi-head loss, backward, AdamW) and an inference forward of the whole model,
  in the memory phase (warm-up over, so W-LD updates run).
--what dmwla: one DMW-LA layer at stage-1 size (56x56, 96 channels, feature_dim 256, num_k 9).
--what volume: a test volume end to end (inference + metrics): batched inference + cropped metrics ("fast") against
  one slice at a time + full-volume medpy metrics ("reference"); "infer_s" is the whole, "network_s" and
  "metrics_s" its two phases. The network is warmed up on a few slices first, so --warmup 0 suffices.
Implementations alternate within each repetition; medians are reported. Peak memory is measured in a child process
that builds and runs only that implementation once: CUDA max_memory_allocated, CPU peak growth of the resident set
(sampled every ms). --grad_checkpointing and --compile apply to the fast implementation (the release has neither);
compiling happens in the warm-up repetitions (and inside the memory probe's one run).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from datasets import get_dataset  # noqa: E402
from networks.recipe import RELEASE_RECIPE, TrainingRecipe  # noqa: E402
from networks.sim_mpnet import DMWLA, SimMPNet, dataset_settings  # noqa: E402
from tests.reference import use_reference_impl  # noqa: E402
from utils.checkpoint import atomic_write_json  # noqa: E402
from utils.inference import resolve_device  # noqa: E402
from utils.optimisation import recipe_optimizer  # noqa: E402

IMPLS = ("fast", "reference")
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
STAGE1 = dict(size=56, channels=96, feature_dim=256, num_k=9)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--what", choices=("model", "dmwla", "volume"), default="model")
    parser.add_argument("--scale", default="small", choices=("pico", "nano", "tiny", "small"))
    parser.add_argument("--img_size", type=int, default=256)
    parser.add_argument("--img_size_s2", type=int, default=224)
    parser.add_argument("--dataset", default="synapse", help="source of num_classes / num_k / feature_dim")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--amp", choices=tuple(AMP_DTYPES), default="none")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per implementation")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions first")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--slices", type=int, default=100, help="--what volume: slices of the test volume")
    parser.add_argument("--slice_size", type=int, default=512, help="--what volume: slice height and width")
    parser.add_argument("--infer_batch", type=int, default=16, help="--what volume: slices per batch (fast)")
    parser.add_argument("--impl", choices=("both", *IMPLS), default="both")
    parser.add_argument("--grad_checkpointing", action="store_true",
                        help="--what model: the fast model recomputes its MaxViT blocks in backward")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the fast implementation (compiled during the warm-up repetitions)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--memory-probe", dest="memory_probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.grad_checkpointing and args.what != "model":
        parser.error("--grad_checkpointing applies to --what model only")
    if args.compile and args.what == "volume":
        parser.error("--compile applies to --what model and --what dmwla")
    return args


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_constants(dataset: str) -> dict[str, int]:
    """num_classes and the paper's num_k / feature_dim of a data set."""
    num_classes = get_dataset(dataset).num_classes
    return dict(num_classes=num_classes, **dataset_settings(dataset, num_classes))


# ----- workloads: each returns {impl: (train_step, infer)} callables -------------------------------------------------
def model_workload(args, device, impls):
    from networks.shared.losses import MultiHeadLoss

    constants = memory_constants(args.dataset)
    torch.manual_seed(0)
    fast = SimMPNet(img_size=args.img_size, img_size_s2=args.img_size_s2, scale=args.scale, pretrained=False,
                    warmup_iters=0, **constants).to(device)
    models = both_implementations(fast, impls, args)
    if "fast" in models:
        models["fast"].set_grad_checkpointing(args.grad_checkpointing)
    criterion = MultiHeadLoss(constants["num_classes"])
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(args.batch, 1, args.img_size, args.img_size, generator=generator).to(device)
    label = torch.randint(constants["num_classes"], (args.batch, args.img_size, args.img_size),
                          generator=generator).to(device)
    return {impl: steps_for(model, lambda m: criterion(m(image), label), lambda m: m(image), args, device)
            for impl, model in models.items()}


def dmwla_workload(args, device, impls):
    torch.manual_seed(0)
    fast = DMWLA(STAGE1["channels"], STAGE1["num_k"], STAGE1["feature_dim"], warmup_iters=0).to(device)
    models = both_implementations(fast, impls, args)
    x = torch.randn(args.batch, STAGE1["channels"], STAGE1["size"], STAGE1["size"], device=device)
    return {impl: steps_for(layer, lambda m: m(x).square().mean(), lambda m: m(x), args, device)
            for impl, layer in models.items()}


def both_implementations(fast: torch.nn.Module, impls, args) -> dict:
    """{impl: module} for the implementations asked for; the reference starts from the fast module's weights.
    --compile applies to the fast one."""
    models = {}
    if "reference" in impls:
        models["reference"] = use_reference_impl(copy.deepcopy(fast) if "fast" in impls else fast)
    if "fast" in impls:
        models["fast"] = torch.compile(fast) if args.compile else fast
    return models


def steps_for(module, loss_of, forward_of, args, device, recipe: TrainingRecipe = RELEASE_RECIPE):
    """(train_step, infer) closures; the train step's optimiser is the one the trainer builds from ``recipe``."""
    amp = AMP_DTYPES[args.amp]
    optimizer = recipe_optimizer(module.parameters(), recipe)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)

    def train_step():
        module.train()
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = loss_of(module)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def infer():
        module.eval()
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            forward_of(module)

    return train_step, infer


def volume_workload(args, device, impls):
    """Inference + metrics of one synthetic test volume: batched + cropped vs one slice at a time + full volume."""
    from medpy import metric

    from utils.inference import predict_volume
    from utils.metrics import case_metrics

    constants = memory_constants(args.dataset)
    classes = constants["num_classes"]
    torch.manual_seed(0)
    model = SimMPNet(img_size=args.img_size, img_size_s2=args.img_size_s2, scale=args.scale, pretrained=False,
                     warmup_iters=0, **constants).to(device).eval()
    rng = np.random.default_rng(0)
    volume = rng.random((args.slices, args.slice_size, args.slice_size), dtype=np.float32)
    label = synthetic_label(args.slices, args.slice_size, classes, rng)
    amp = AMP_DTYPES[args.amp]

    def cropped_metrics(prediction):
        case_metrics(prediction, label, classes)

    def medpy_metrics(prediction):
        for c in range(1, classes):  # the release's per-class medpy calls on the whole volume
            pred, gt = prediction == c, label == c
            if pred.any() and gt.any():
                metric.binary.dc(pred, gt), metric.binary.hd95(pred, gt)
                metric.binary.jc(pred, gt), metric.binary.assd(pred, gt)

    def end_to_end(batch_size, metrics):
        def run():
            start = time.perf_counter()
            prediction = predict_volume(model, volume, args.img_size, batch_size=batch_size, amp_dtype=amp)
            network = time.perf_counter() - start  # the prediction is on the host: the device has finished
            metrics(prediction)
            return {"network_s": network, "metrics_s": time.perf_counter() - start - network}
        return run

    paths = {"fast": (args.infer_batch, cropped_metrics), "reference": (1, medpy_metrics)}
    # Warm the network up (lazy CUDA initialisation, kernel selection) at each path's batch size on a few slices, so
    # that --warmup 0 suffices: a warm-up repetition of the whole volume would double the run for nothing.
    for impl in impls:
        batch_size = paths[impl][0]
        predict_volume(model, volume[:batch_size], args.img_size, batch_size=batch_size, amp_dtype=amp)
    return {impl: (None, end_to_end(*paths[impl])) for impl in impls}


def synthetic_label(slices: int, size: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    """Ellipsoidal organs, one per foreground class, so that every class is present."""
    z, y, x = np.ogrid[:slices, :size, :size]
    label = np.zeros((slices, size, size), dtype=np.int64)
    for c in range(1, classes):
        centre = rng.uniform(0.25, 0.75, 3) * (slices, size, size)
        radius = rng.uniform(0.08, 0.2, 3) * (slices, size, size)
        inside = sum(((axis - m) / r) ** 2 for axis, m, r in zip((z, y, x), centre, radius)) <= 1
        label[inside] = c
    return label


WORKLOADS = {"model": model_workload, "dmwla": dmwla_workload, "volume": volume_workload}


# ----- measurement -------------------------------------------------------------------------------------------------
def timed(fn, device) -> dict:
    """{"total_s": seconds of ``fn()``, plus the phase times in seconds that ``fn`` returns, if any}."""
    synchronize(device)
    start = time.perf_counter()
    phases = fn() or {}
    synchronize(device)
    return {"total_s": time.perf_counter() - start, **phases}


def run_timings(args, device, impls, workloads=None) -> dict:
    """{impl: {"train_step_s", "infer_s", and any phases of them: median over the timed repetitions}}."""
    workloads = workloads or WORKLOADS[args.what](args, device, impls)
    times = {impl: {"train_step_s": [], "infer_s": []} for impl in impls}
    for repetition in range(args.warmup + args.repeats):
        for impl in impls:  # interleaved, so drift affects both alike
            train_step, infer = workloads[impl]
            for key, fn in (("train_step_s", train_step), ("infer_s", infer)):
                if fn is None:
                    continue
                measured = timed(fn, device)
                if repetition >= args.warmup:
                    times[impl][key].append(measured.pop("total_s"))
                    for phase, seconds in measured.items():
                        times[impl].setdefault(phase, []).append(seconds)
    return {impl: {key: statistics.median(values) if values else None for key, values in result.items()}
            for impl, result in times.items()}


class RssPeak:
    """Largest growth of the resident set size over the `with` block, sampled every millisecond (Linux)."""

    PAGE = os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 2 ** 20

    def _rss(self) -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * self.PAGE

    def _sample(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self._rss())


def peak_memory_mb(argv: list[str], impl: str) -> float:
    """Peak memory of a child process that builds only ``impl``'s workload of the command line ``argv`` and runs it
    once (see the docstring)."""
    command = [sys.executable, __file__, *argv, "--impl", impl, "--memory-probe"]
    result = subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ})
    return float(result.stdout.strip().splitlines()[-1])


def probe_memory(args, device) -> float:
    """In the child process: build ``args.impl``, run it once, return its peak memory in MiB."""
    probe = argparse.Namespace(**{**vars(args), "repeats": 1, "warmup": 0})
    workloads = WORKLOADS[args.what](args, device, [args.impl])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        run_timings(probe, device, [args.impl], workloads)
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    with RssPeak() as peak:
        run_timings(probe, device, [args.impl], workloads)
    return peak.growth_mb


def start_run(args) -> torch.device:
    """Apply ``--threads`` and resolve ``--device`` (one ``error:`` line for a device that is not there)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return resolve_device(args.device)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None


def run_config(args, device: torch.device, *internal: str) -> dict:
    """The report's ``config``: the options (without ``--json``, the probe flag and ``internal`` attributes), the
    device, torch version, threads and GPU name."""
    config = {k: v for k, v in vars(args).items() if k not in ("json", "memory_probe", *internal)}
    config.update(device=str(device), torch=torch.__version__, threads=torch.get_num_threads(),
                  gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None)
    return config


def write_report(report: dict, path: Path | None) -> None:
    """Print the report and, with ``--json``, write it there atomically (temporary name, then rename)."""
    print(json.dumps(report, indent=2))
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, report)


def main(argv: list[str] | None = None) -> dict | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    device = start_run(args)
    if args.memory_probe:  # child process: one implementation, print its peak memory in MiB
        print(probe_memory(args, device))
        return None
    impls = IMPLS if args.impl == "both" else (args.impl,)
    results = run_timings(args, device, impls)
    for impl in impls:
        results[impl]["peak_mem_mb"] = peak_memory_mb(argv, impl)
    report = {"config": run_config(args, device), **results}
    if len(impls) == 2:
        fast, reference = results["fast"], results["reference"]
        report["speedup"] = {key.removesuffix("_s"): reference[key] / fast[key]
                             for key in fast if key.endswith("_s") and fast[key]}
        report["memory_ratio"] = fast["peak_mem_mb"] / reference["peak_mem_mb"]
    write_report(report, args.json)
    return report


if __name__ == "__main__":
    main()

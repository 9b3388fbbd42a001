"""Do a checkpoint's BatchNorm running statistics fit? Evaluation mode against batch statistics, in one run.

    python benchmarks/normalisation_check.py --checkpoint runs/demo/last.pth \
        --volume_path data/phantom/Synapse/test_vol_h5 --list_dir data/phantom/lists/lists_Synapse --json out.json

Reports, for the checkpoint as it is:
* ``fit``: every BatchNorm layer's running statistics against the inputs it receives in evaluation-mode forwards of
  the run's training batches (``utils.normalisation.normalisation_fit``; shift in running sd, variance ratio);
* ``training_agreement``: the share of pixels of those batches whose predicted class is the same in evaluation mode
  and with batch statistics (``utils.normalisation.batch_statistics``, a diagnostic), and each one's mean Dice
  against the labels;
* ``test``: mean DSC / HD95 of the test split (test.py's protocol) in both modes.
Batch statistics normalise each batch by itself, so they are independent of the running statistics: where the two
modes agree on the (shuffled) training batches, the running statistics fit. On the test split, test.py's batches are
consecutive slices of one volume, whose statistics can be unlike any training batch's (near-empty slices at a
volume's ends): read its batch-statistics scores with that in mind. Test options other than the data paths are
test.py's defaults.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from datasets import get_dataset  # noqa: E402
from utils.batch_context import model_context, with_test_context  # noqa: E402
from utils.checkpoint import atomic_write_json, build_model_from_checkpoint  # noqa: E402
from utils.cli import build_test_parser  # noqa: E402
from utils.config import saved_options  # noqa: E402
from utils.evaluator import build_eval_dataset, evaluate_model, evaluation_distance_unit  # noqa: E402
from utils.inference import resolve_device, sum_of_heads  # noqa: E402
from utils.model_input import with_model_input  # noqa: E402
from utils.normalisation import batch_statistics, normalisation_fit, worst_first  # noqa: E402
from utils.recalibration import forward, trained_run, training_batches  # noqa: E402
from utils.runlog import seed_everything  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--volume_path", required=True, help="the test data (test.py's --volume_path)")
    parser.add_argument("--list_dir", required=True, help="the lists (test.py's --list_dir)")
    parser.add_argument("--test_list", default=None, help="the test list in --list_dir (default: the data set's)")
    parser.add_argument("--root_path", default=None, help="the training data (default: the run's)")
    parser.add_argument("--num_batches", type=int, default=36, help="training batches for the fit and agreement")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def mean_dice(prediction: torch.Tensor, label: torch.Tensor, num_classes: int) -> float:
    """Mean over the foreground classes present in the label (pixels of the whole set of batches)."""
    scores = []
    for cls in range(1, num_classes):
        truth, predicted = label == cls, prediction == cls
        if truth.any():
            scores.append(2 * (truth & predicted).sum().item() / (truth.sum() + predicted.sum()).item())
    return sum(scores) / len(scores) if scores else float("nan")


def training_agreement(model, batches, num_classes: int) -> dict:
    labels, running, batch_stats = [], [], []
    with torch.no_grad():
        for batch in batches:
            labels.append(batch["label"].cpu())
            running.append(sum_of_heads(forward(model.eval(), batch)).argmax(1).cpu())
            with batch_statistics(model):
                batch_stats.append(sum_of_heads(forward(model, batch)).argmax(1).cpu())
    label, running, batch_stats = (torch.cat(t) for t in (labels, running, batch_stats))
    return {"pixels_agreeing": (running == batch_stats).double().mean().item(),
            "dice_running_statistics": mean_dice(running, label, num_classes),
            "dice_batch_statistics": mean_dice(batch_stats, label, num_classes)}


def test_scores(model, ckpt: dict, args, device) -> dict:
    run = saved_options(ckpt).run
    config = build_test_parser(run.dataset).parse_config(
        ["--checkpoint", args.checkpoint, "--volume_path", args.volume_path, "--list_dir", args.list_dir,
         "--device", str(device), *(["--test_list", args.test_list] if args.test_list else [])])
    dataset = with_test_context(build_eval_dataset(config, config.test_list), config, model.arch, saved_options(ckpt),
                                model.img_size, str(device), args.checkpoint)
    dataset = with_model_input(dataset, get_dataset(config.dataset), model, model_context(model.arch))
    options = dict(kind=get_dataset(config.dataset).kind, img_size=model.img_size, num_classes=config.num_classes,
                   protocol=config.metrics, batch_size=config.batch_size, device=device,
                   distance_unit=evaluation_distance_unit(config))
    scores = {}
    for mode in ("running_statistics", "batch_statistics"):
        model.eval()
        if mode == "running_statistics":
            summary = evaluate_model(model, dataset, **options)[1]
        else:
            with batch_statistics(model):
                summary = evaluate_model(model, dataset, **options)[1]
        scores[mode] = {"mean_dice": float(summary["mean_dice"]), "mean_hd95": float(summary["mean_hd95"])}
    return scores


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model, ckpt = build_model_from_checkpoint(args.checkpoint)
    model.to(device)
    trained = trained_run(ckpt, argparse.Namespace(root_path=args.root_path, list_dir=None), args.checkpoint)
    seed_everything(trained.run.seed, True)
    batches = list(training_batches(trained, model, args.batch_size, args.num_batches, device, 0))
    fits = normalisation_fit(model, batches, forward)
    worst = worst_first(fits)
    report = {"checkpoint": args.checkpoint, "training_batches": len(batches), "batch_size": args.batch_size,
              "fit": [{"layer": fit.layer, "shift_sd": round(fit.shift, 3),
                       "variance_ratio": round(fit.variance_ratio, 3)} for fit in worst],
              "training_agreement": training_agreement(model, batches, model.num_classes),
              "test": test_scores(model, ckpt, args, device),
              "config": {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__}}
    summary = {key: report[key] for key in ("training_agreement", "test")}
    print(json.dumps({**summary, "fit": report["fit"][:8]}, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()

"""Support-selection ablation and MatchSeg vs UniVerSeg on one data set (issue 14): train + test per variant.

    python benchmarks/ablation_matchseg.py --out runs/ablation_matchseg --seeds 2222 1 2 \
        --json benchmarks/results/cpu2_ablation_matchseg_busi_phantom.json

Every variant runs the same recipe as ``make demo-matchseg`` (the BUSI phantom by default, 64 px, widths 32,
k = 4, 20 epochs at lr 1e-3, best-validation checkpoint tested with supports from the training split) through
train.py's and test.py's own parsers, so a run is exactly the command line it records; once per ``--seeds`` entry
(the seed of initialisation, augmentation and the random backend; 2222 is the demo's). Variants:

- ``matchseg_hog`` / ``matchseg_lbp`` / ``matchseg_random``: the support-selection backends of
  datasets/episodes/backends.py;
- ``matchseg_clip_random_init``: the ``clip`` path with an open_clip ViT-B-32 whose weights are *randomly
  initialised* (written to ``<out>/random_init_ViT-B-32.pt`` unless ``--clip_checkpoint`` is given). It shows
  that the CLIP path runs end to end; it is **not** CLIP, and its figures say nothing about CLIP's retrieval;
- ``universeg_hog``: the backbone without Joint Attention (widths 32, this data set's 3 input channels).

Results: one row per variant and seed (backend, mean DSC / IoU / HD95 over the test images, training wall time) in
the JSON report (``--json``, with each run's command lines); the printed table gives per variant the mean over the
seeds and each seed's DSC; ``<out>/report.html`` is a page of both tables (per variant, and one sortable row per
run linking its test page). A run already finished under ``--out`` (``<variant>_seed<seed>/test/summary.json``
exists) is read back rather than rerun.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.checkpoint import atomic_torch_save, atomic_write_json, atomic_write_text  # noqa: E402
from utils.cli import build_test_parser, build_train_parser  # noqa: E402
from utils.evaluator import evaluate  # noqa: E402
from utils.report import (  # noqa: E402
    REPORT_HTML, Column, esc, facts_list, html_page, html_table, number_td, relative_href, td,
)
from utils.trainer import train  # noqa: E402

# name -> (model options, support-selection backend)
VARIANTS = {
    "matchseg_hog": (["--model", "matchseg"], "hog"),
    "matchseg_lbp": (["--model", "matchseg"], "lbp"),
    "matchseg_random": (["--model", "matchseg"], "random"),
    "matchseg_clip_random_init": (["--model", "matchseg"], "clip"),
    "universeg_hog": (["--model", "universeg"], "hog"),
}
RECIPE = ["--img_size", "64", "--widths", "32", "32", "32", "32", "--pretrained", "none", "--support_size", "4",
          "--max_epochs", "20", "--batch_size", "8", "--base_lr", "1e-3", "--num_workers", "1"]
DEMO_SEED = 2222  # the training scripts' default, which make demo-matchseg uses


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="busi")
    parser.add_argument("--volume_path", default="data/phantom/BUSI")
    parser.add_argument("--list_dir", default="data/phantom/lists/lists_BUSI")
    parser.add_argument("--out", default="runs/ablation_matchseg", help="one run directory per variant under it")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[DEMO_SEED], help="one run per seed and variant")
    parser.add_argument("--max_epochs", type=int, default=None, help="override the recipe's 20 epochs")
    parser.add_argument("--clip_checkpoint", default=None,
                        help="open_clip ViT-B-32 state_dict for the clip variant (default: a random-init one)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="write the report here")
    return parser.parse_args(argv)


def random_init_clip_checkpoint(path: Path) -> Path:
    """A ViT-B-32 state_dict with open_clip's random initialisation (seeded): the clip path without real weights."""
    if not path.exists():
        import open_clip
        import torch

        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32", pretrained=None)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(model.state_dict(), path)
    return path


def run_directory(args: argparse.Namespace, name: str, seed: int) -> Path:
    return Path(args.out) / f"{name}_seed{seed}"


def variant_commands(args: argparse.Namespace, name: str, seed: int,
                     clip_checkpoint: Path | None) -> tuple[list, list]:
    model_options, backend = VARIANTS[name]
    run_dir = run_directory(args, name, seed)
    data = ["--dataset", args.dataset, "--volume_path", args.volume_path, "--list_dir", args.list_dir]
    recipe = list(RECIPE)
    if args.max_epochs is not None:
        recipe[recipe.index("--max_epochs") + 1] = str(args.max_epochs)
    selection = ["--support_selection", backend, "--support_cache", str(Path(args.out) / "support_cache")]
    if backend == "clip":
        selection += ["--clip_checkpoint", str(clip_checkpoint)]
    train_argv = data + ["--root_path", args.volume_path] + model_options + recipe + selection + [
        "--seed", str(seed), "--device", args.device, "--output_dir", str(run_dir), "--resume", "auto"]
    test_argv = data + ["--checkpoint", str(run_dir / "best_val.pth"), "--output_dir", str(run_dir / "test"),
                        "--device", args.device]
    return train_argv, test_argv


def run_variant(args: argparse.Namespace, name: str, seed: int, clip_checkpoint: Path | None) -> dict:
    train_argv, test_argv = variant_commands(args, name, seed, clip_checkpoint)
    run_dir = run_directory(args, name, seed)
    summary_path = run_dir / "test" / "summary.json"
    timing_path = run_dir / "ablation_timing.json"
    if not summary_path.exists():
        start = time.perf_counter()
        train(build_train_parser().parse_config(train_argv))
        train_s = time.perf_counter() - start
        atomic_write_json(timing_path, {"train_s": train_s})
        evaluate(build_test_parser().parse_config(test_argv))
    summary = json.loads(summary_path.read_text())
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    context = summary.get("context", {})
    return {"variant": name, "seed": seed, "model": VARIANTS[name][0][1],
            "support_backend": context.get("support_backend"),
            "mean_dice": summary["mean_dice"], "mean_iou": summary.get("mean_jaccard"),
            "mean_hd95": summary.get("mean_hd95"), "train_s": timing.get("train_s"),
            "train_command": "python train.py " + " ".join(train_argv),
            "test_command": "python test.py " + " ".join(test_argv)}


def _mean(values: list, digits: int = 3) -> str:
    known = [value for value in values if value is not None]
    return "n/a" if not known else f"{statistics.fmean(known):.{digits}f}"


def markdown_table(rows: list[dict]) -> str:
    """Per variant (in the order of the rows): means over its seeds, and each seed's DSC."""
    lines = ["| variant | seeds | mean DSC | mean IoU | mean HD95 | DSC per seed | train s per run |",
             "|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(row["variant"] for row in rows):
        runs = [row for row in rows if row["variant"] == name]
        per_seed = ", ".join(f"{row['mean_dice']:.3f}" for row in runs)
        means = [_mean([row[key] for row in runs]) for key in ("mean_dice", "mean_iou", "mean_hd95")]
        train_s = _mean([row["train_s"] for row in runs], digits=0)
        lines.append("| " + " | ".join([name, str(len(runs)), *means, per_seed, train_s]) + " |")
    return "\n".join(lines)


def _known_mean(values: list) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.fmean(known) if known else None


def ablation_html(args: argparse.Namespace, rows: list[dict]) -> str:
    """The page in ``--out``: per variant the means over its seeds, then one row per run (sortable) with a link to
    its test page."""
    metrics = (("mean_dice", "DSC"), ("mean_iou", "IoU"), ("mean_hd95", "HD95"))
    variant_rows = []
    for name in dict.fromkeys(row["variant"] for row in rows):
        runs = [row for row in rows if row["variant"] == name]
        variant_rows.append([td(name, cls="text"), td(str(len(runs)), value=str(len(runs))),
                             *(number_td(_known_mean([row[key] for row in runs]), 3) for key, _ in metrics),
                             td(", ".join(f"{row['mean_dice']:.3f}" for row in runs), cls="text"),
                             number_td(_known_mean([row["train_s"] for row in runs]), 0)])
    variants = html_table([Column("variant", "variant", numeric=False), Column("seeds", "seeds"),
                           *(Column(key, f"mean {title}") for key, title in metrics),
                           Column(None, "DSC per seed", numeric=False), Column("train_s", "train s per run")],
                          variant_rows, table_id="variants")
    run_rows = []
    for row in rows:
        page = run_directory(args, row["variant"], row["seed"]) / "test" / REPORT_HTML
        link = (f'<a href="{esc(relative_href(page, args.out))}">test page</a>' if page.is_file()
                else '<span class="na">none</span>')
        run_rows.append([td(row["variant"], cls="text"), td(str(row["seed"]), value=str(row["seed"])),
                         td(row["model"], cls="text"), td(row["support_backend"] or "", cls="notes"),
                         *(number_td(row[key], 3) for key, _ in metrics), number_td(row["train_s"], 0),
                         td(link, cls="text", raw=True)])
    runs = html_table([Column("variant", "variant", numeric=False), Column("seed", "seed"),
                       Column("model", "model", numeric=False), Column("backend", "support backend", numeric=False),
                       *(Column(key, title) for key, title in metrics), Column("train_s", "train s"),
                       Column(None, "details", numeric=False)], run_rows, table_id="runs")
    facts = {"data set": args.dataset, "images": args.volume_path, "lists": args.list_dir,
             "seeds": " ".join(map(str, args.seeds)), "epochs": args.max_epochs or "the recipe's 20"}
    return html_page(f"Support-selection ablation on {args.dataset}", [
        facts_list(facts), "<h2>Per variant</h2>",
        '<p class="note">Means over the seeds of the mean DSC / IoU / HD95 over the test images; training wall time '
        "per run. matchseg_clip_random_init uses randomly initialised ViT-B-32 weights: it exercises the clip path "
        "and is not CLIP.</p>", variants, "<h2>Per run</h2>",
        '<p class="note">One row per variant and seed; click a header to sort.</p>', runs])


def main(argv=None) -> int:
    args = parse_args(argv)
    clip_checkpoint = None
    if "matchseg_clip_random_init" in args.variants:
        clip_checkpoint = Path(args.clip_checkpoint or Path(args.out) / "random_init_ViT-B-32.pt")
        if args.clip_checkpoint is None:
            random_init_clip_checkpoint(clip_checkpoint)
    rows = [run_variant(args, name, seed, clip_checkpoint) for name in args.variants for seed in args.seeds]
    table = markdown_table(rows)
    print(table)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out) / REPORT_HTML, ablation_html(args, rows))
    print(f"wrote {Path(args.out) / REPORT_HTML}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json, {"dataset": args.dataset, "volume_path": args.volume_path,
                                      "note": "matchseg_clip_random_init uses randomly initialised ViT-B-32 "
                                              "weights: it exercises the clip path and is not CLIP",
                                      "table": table, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

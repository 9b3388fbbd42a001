"""Analysis figures of a run or a checkpoint: `python visualize.py {k-curve,curves,layers,clusters,predictions} --help`.

    python visualize.py k-curve --run runs/synapse_small_256            # W-LD memory K over training
    python visualize.py curves --run runs/synapse_small_256             # loss per step / epoch, validation DSC
    python visualize.py layers --checkpoint runs/x/last.pth             # DMW-LA layers and their map sizes
    python visualize.py clusters --checkpoint runs/x/last.pth --dataset synapse --cases case0001:70 --layer 3
    python visualize.py predictions --checkpoint runs/x/last.pth --dataset synapse --cases case0001:70 case0002
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from datasets import list_datasets
from utils import plots
from utils.cli import run_cli


def _written(path: Path) -> None:
    print(f"wrote {path}")


def _add_run_command(commands, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("--run", required=True, help=f"run directory (holds {plots.STEP_LOG}, {plots.EPOCH_LOG}, "
                                                     f"{plots.CONFIG_FILE})")
    parser.add_argument("--out", default=None, help=f"PNG to write (default: <run>/{plots.FIGURES_DIR}/...)")
    parser.add_argument("--dpi", type=int, default=plots.DPI, help="resolution (figure size in inches x dpi)")
    return parser


def _add_checkpoint_command(commands, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by the trainer (e.g. last.pth)")
    parser.add_argument("--dataset", required=True, type=str.lower, choices=list_datasets())
    parser.add_argument("--cases", nargs="+", default=(), metavar="CASE[:SLICE]",
                        help="volumes: case names, each optionally with a slice index (default: the slice with the "
                             "most foreground); 2-D image sets: image names (default: the split's first case)")
    parser.add_argument("--volume_path", default=None, help="evaluation data folder (default: the data set's)")
    parser.add_argument("--list_dir", default=None, help="folder of the list files (default: the data set's)")
    parser.add_argument("--split", default=None, help="list name in --list_dir (default: the data set's test list)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--out", default=None,
                        help=f"PNG to write (default: <checkpoint dir>/{plots.FIGURES_DIR}/...)")
    return parser


def _data_options(args: argparse.Namespace) -> dict:
    return dict(cases=args.cases, out=args.out, volume_path=args.volume_path, list_dir=args.list_dir,
                split=args.split, device=args.device)


def build_parser() -> argparse.ArgumentParser:
    """Parser with one subcommand per figure; each sets ``entry``, the function run_cli calls."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[2:]))
    commands = parser.add_subparsers(dest="command", required=True)

    k_curve = _add_run_command(commands, "k-curve", "W-LD memory K per optimizer step, with the band [M/4, 3M/4]")
    k_curve.set_defaults(entry=lambda a: _written(plots.write_k_curve(a.run, a.out, a.dpi)))

    curves = _add_run_command(commands, "curves", "loss per step (and smoothed), loss per epoch, validation DSC")
    curves.add_argument("--smooth", type=int, default=plots.SMOOTH_WINDOW, help="moving-average window in steps")
    curves.set_defaults(entry=lambda a: _written(plots.write_training_curves(a.run, a.out, a.smooth, a.dpi)))

    layers = commands.add_parser("layers", help="list the DMW-LA layers (index for clusters --layer) with their "
                                                "feature-map sizes")
    layers.add_argument("--checkpoint", required=True)
    layers.add_argument("--device", default="cpu")
    layers.set_defaults(entry=lambda a: print(plots.describe_memory_layers(a.checkpoint, a.device)))

    clusters = _add_checkpoint_command(commands, "clusters", "memory-cluster maps of one DMW-LA layer: per image "
                                                             "the cluster of every pixel and each cluster's pixels")
    clusters.add_argument("--layer", type=int, default=0,
                          help="index into model.memory_layers(); `visualize.py layers --checkpoint X` lists them "
                               "with their feature-map sizes (so does an index out of range)")
    clusters.set_defaults(entry=lambda a: _written(plots.write_cluster_maps(a.checkpoint, a.dataset, layer=a.layer,
                                                                            **_data_options(a))))

    predictions = _add_checkpoint_command(commands, "predictions", "ground truth beside prediction, with a class "
                                                                   "legend")
    predictions.set_defaults(entry=lambda a: _written(plots.write_prediction_overlays(a.checkpoint, a.dataset,
                                                                                      **_data_options(a))))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; bad input gives one `error: ...` line and exit code 2."""
    args = build_parser().parse_args(argv)
    return run_cli(args.entry, args)


if __name__ == "__main__":
    sys.exit(main())

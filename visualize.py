"""Analysis figures of a run or a checkpoint: `python visualize.py {k-curve,curves,layers,clusters,predictions} --help`.

    python visualize.py k-curve --run runs/synapse_small_256            # W-LD memory K over training
    python visualize.py curves --run runs/synapse_small_256             # loss per step / epoch, validation DSC
    python visualize.py layers --checkpoint runs/x/last.pth             # DMW-LA layers and their map sizes
    python visualize.py clusters --checkpoint runs/x/last.pth --dataset synapse --cases case0001:70 --layer 3
    python visualize.py predictions --checkpoint runs/x/last.pth --cases case0001:70 case0002

The generic figures (training curves, prediction grids) are ``utils.plots``'; Sim-MPNet's (K curve, DMW-LA layers,
memory-cluster maps) are computed by ``networks.sim_mpnet.figures`` and laid out here, from the run's logs and
config.json or the checkpoint, with the generic helpers.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from datasets import list_datasets
from networks.sim_mpnet.figures import (
    CLUSTER_MAP_ALPHA, K_COLUMN, checked_layer, cluster_assignments, cluster_highlights, draw_k_curve,
    memory_layer_table, upsample_nearest,
)
from utils import plots
from utils.checkpoint import build_model_from_checkpoint
from utils.cli import dataset_argument, run_cli
from utils.config import saved_options
from utils.inference import model_device, network_input, resolve_device
from utils.run_defaults import checkpoint_defaults
from utils.visual import class_colours, display_rgb, overlay, save_png

K_CURVE_FIGSIZE = (6.0, 3.5)  # inches: 900 x 525 pixels at plots.DPI


# ----------------------------------------------------------------------------------------------------------------
# Sim-MPNet's figures
# ----------------------------------------------------------------------------------------------------------------
def k_curve_figure(steps: Mapping[str, np.ndarray], pool_size: int | None = None,
                   wld_start_epoch: int | None = None) -> Figure:
    """W-LD's memory K per step (``networks.sim_mpnet.figures.draw_k_curve``) as a figure."""
    figure = plots.new_figure(K_CURVE_FIGSIZE)
    draw_k_curve(figure.add_subplot(), steps, pool_size, wld_start_epoch)
    return figure


def _whole_number(value) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def write_k_curve(run_dir: str | Path, out: str | Path | None = None, dpi: int = plots.DPI) -> Path:
    """K curve of a run (``<run>/figures/k_curve.png`` unless ``out``); M (the model's pool_size) and the W-LD start
    (its training option wld_start_epoch) from config.json, when it records them."""
    record = plots.load_run_config(run_dir)
    model_config = record.get("model_config") if isinstance(record.get("model_config"), dict) else {}
    figure = k_curve_figure(plots.load_step_log(run_dir, (K_COLUMN,)), _whole_number(model_config.get("pool_size")),
                            _whole_number(saved_options(record).train_options.get("wld_start_epoch")))
    return plots.save_figure(figure, out or Path(run_dir) / plots.FIGURES_DIR / "k_curve.png", dpi)


def describe_memory_layers(checkpoint: str | Path, device: str = "cpu") -> str:
    """One line per DMW-LA layer of a checkpoint's model: index, module name, feature map, clusters."""
    model, _ = build_model_from_checkpoint(checkpoint, {}, map_location="cpu")
    model.to(resolve_device(device))
    return "\n".join(layer.describe() for layer in memory_layer_table(model))


def cluster_grid(titles: Sequence[str], images: np.ndarray, assignments: np.ndarray, num_k: int,
                 title: str) -> np.ndarray:
    """Figure with one row per image: [image | cluster map | cluster 1 | ... | cluster num_k], each S x S.

    ``images`` [B, C, S, S] (the network inputs, C = 1 grey or 3 RGB), ``assignments`` [B, h, w] token clusters,
    upsampled (nearest) to S x S. The cluster map blends each pixel with its cluster's colour (cluster c in the
    colour of class c + 1); cluster c's panel shows the pixels assigned to c tinted in c's colour, the others dimmed.
    """
    colours = class_colours(num_k + 1)[1:]
    rows = []
    for image, assignment in zip(images, assignments):
        image = image[0] if len(image) == 1 else image
        shown = display_rgb(image)
        pixels = upsample_nearest(assignment, shown.shape[:2])
        cluster_map = overlay(image, pixels + 1, num_k + 1, alpha=CLUSTER_MAP_ALPHA)
        rows.append([shown, cluster_map, *cluster_highlights(shown, pixels, colours)])
    names = [f"cluster {c + 1}" for c in range(num_k)]
    return plots.annotated_grid(rows, titles, ["image", "clusters", *names], title, names, colours)


def write_cluster_maps(checkpoint: str | Path, dataset: str, cases: Sequence[str] = (), layer: int = 0,
                       out: str | Path | None = None, volume_path: str | None = None, list_dir: str | None = None,
                       split: str | None = None, device: str = "auto") -> Path:
    """Memory-cluster maps of DMW-LA layer ``layer`` for the selected images (``utils.plots.load_figure_items``);
    ``<checkpoint dir>/figures/clusters_layer<layer>.png`` unless ``out``. The model is used in eval mode only,
    so its memory is not changed."""
    model = plots.load_model(checkpoint, dataset, device)
    memory_layer = checked_layer(model, layer)
    items = plots.load_figure_items(dataset, cases, model.num_classes, volume_path, list_dir, split)
    images = np.stack([network_input(item.image, model.img_size) for item in items])
    assignments = cluster_assignments(model, layer, torch.from_numpy(images).to(model_device(model)))
    name = next(name for name, module in model.named_modules() if module is memory_layer)
    title = (f"DMW-LA layer {layer}: {name} ({assignments.shape[1]}x{assignments.shape[2]} map, "
             f"{memory_layer.num_k} clusters)")
    figure = cluster_grid([item.title for item in items], images, assignments, memory_layer.num_k, title)
    path = Path(out) if out else plots.default_figure_path(checkpoint, f"clusters_layer{layer}.png")
    save_png(path, figure)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------

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
    parser.add_argument("--dataset", default=None, type=dataset_argument,
                        help=f"data set of the images ({', '.join(list_datasets())}, or a prepared own data set's "
                             f"folder; default: the checkpoint's run's)")
    parser.add_argument("--cases", nargs="+", default=(), metavar="CASE[:SLICE]",
                        help="volumes: case names, each optionally with a slice index (default: the slice with the "
                             "most foreground); 2-D image sets: image names (default: the split's first case)")
    parser.add_argument("--volume_path", default=None, help="evaluation data folder (default: the checkpoint's run's "
                                                            "on its data set, else the data set's)")
    parser.add_argument("--list_dir", default=None, help="folder of the list files (default: the checkpoint's run's on "
                                                         "its data set, else the data set's)")
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
    k_curve.set_defaults(entry=lambda a: _written(write_k_curve(a.run, a.out, a.dpi)))

    curves = _add_run_command(commands, "curves", "loss per step (and smoothed), loss per epoch, validation DSC")
    curves.add_argument("--smooth", type=int, default=plots.SMOOTH_WINDOW, help="moving-average window in steps")
    curves.set_defaults(entry=lambda a: _written(plots.write_training_curves(a.run, a.out, a.smooth, a.dpi)))

    layers = commands.add_parser("layers", help="list the DMW-LA layers (index for clusters --layer) with their "
                                                "feature-map sizes")
    layers.add_argument("--checkpoint", required=True)
    layers.add_argument("--device", default="cpu")
    layers.set_defaults(entry=lambda a: print(describe_memory_layers(a.checkpoint, a.device)))

    clusters = _add_checkpoint_command(commands, "clusters", "memory-cluster maps of one DMW-LA layer: per image "
                                                             "the cluster of every pixel and each cluster's pixels")
    clusters.add_argument("--layer", type=int, default=0,
                          help="index into model.memory_layers(); `visualize.py layers --checkpoint X` lists them "
                               "with their feature-map sizes (so does an index out of range)")
    clusters.set_defaults(entry=lambda a: _written(write_cluster_maps(a.checkpoint, a.dataset, layer=a.layer,
                                                                      **_data_options(a))))

    predictions = _add_checkpoint_command(commands, "predictions", "ground truth beside prediction, with a class "
                                                                   "legend")
    predictions.set_defaults(entry=lambda a: _written(plots.write_prediction_overlays(a.checkpoint, a.dataset,
                                                                                      **_data_options(a))))
    return parser


def fill_from_checkpoint(args: argparse.Namespace) -> argparse.Namespace:
    """The data set and data folders a checkpoint's run recorded, where the command line gives none
    (``utils.run_defaults``; the folders only when the data set is the run's)."""
    if getattr(args, "dataset", False) is False:  # a subcommand without data options
        return args
    for name, value in checkpoint_defaults(args.checkpoint, args.dataset, ("volume_path", "list_dir")).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; bad input gives one `error: ...` line and exit code 2."""
    parser = build_parser()
    args = fill_from_checkpoint(parser.parse_args(argv))
    if getattr(args, "dataset", "") is None:
        parser.error(f"--dataset is required: {args.checkpoint} records no training run's data set")
    return run_cli(args.entry, args)


if __name__ == "__main__":
    sys.exit(main())

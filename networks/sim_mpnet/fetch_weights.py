"""Fetch encoder 1's ImageNet MaxViT weights on a machine with internet and save them where Sim-MPNet looks:

    python -m networks.sim_mpnet.fetch_weights                          # small at 256 px: the paper's
    python -m networks.sim_mpnet.fetch_weights --scale tiny --img_size 224
    python -m networks.sim_mpnet.fetch_weights --all --out_dir pretrained_pth/maxvit

timm downloads its pretrained tag ``<backbone>.sw_in1k`` (Ross Wightman's ImageNet-1k weights, the files the release
links, from the Hugging Face hub) and the state_dict is saved under the release's file name
(``pretrained_pth/maxvit/<name>_sw-<hash>.pth``, ``networks.sim_mpnet.config.PRETRAINED_FILES``), then read back
through the loader training uses. The only command of the repository that downloads anything; copy the folder to
a machine without internet.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import timm
import torch

from datasets.io.atomic import atomic_path

from .config import BACKBONES, PRETRAINED_DIR, PRETRAINED_FILES, backbone_name
from .maxvit_encoder import load_backbone_weights

TIMM_TAG = "sw_in1k"  # timm's pretrained tag of every backbone in PRETRAINED_FILES


def timm_name(backbone: str) -> str:
    """timm's name with pretrained tag of a backbone, e.g. ``maxxvit_rmlp_small_rw_256.sw_in1k``."""
    return f"{backbone}.{TIMM_TAG}"


def fetch(backbone: str, out_dir: str | Path = PRETRAINED_DIR) -> Path:
    """Download ``backbone``'s ImageNet weights through timm, save them under the released file name in ``out_dir``
    (atomically), check that the loader reads them, and return the path."""
    model = timm.create_model(timm_name(backbone), pretrained=True)
    path = Path(out_dir) / PRETRAINED_FILES[backbone]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp_path:
        torch.save(model.state_dict(), tmp_path)
    load_backbone_weights(timm.create_model(backbone, pretrained=False, num_classes=0), backbone, path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name if __spec__ else __name__}",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=sorted(BACKBONES), default="small")
    parser.add_argument("--img_size", type=int, default=256, help="network input (tiny and small: 224 or 256)")
    parser.add_argument("--backbone", choices=sorted(PRETRAINED_FILES), default=None,
                        help="a timm backbone by name instead of --scale / --img_size")
    parser.add_argument("--all", action="store_true", help="every backbone of every scale")
    parser.add_argument("--out_dir", default=str(PRETRAINED_DIR), help="folder Sim-MPNet reads (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        names = sorted(PRETRAINED_FILES) if args.all else [args.backbone or backbone_name(args.scale, args.img_size)]
        for name in names:
            print(f"wrote {fetch(name, args.out_dir)} ({timm_name(name)})")
    except (ValueError, OSError, RuntimeError) as exc:  # no network, no such tag, a full disk: one line
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

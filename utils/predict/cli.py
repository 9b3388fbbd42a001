"""predict.py's command line: its options (those of the batch contexts included) and the exit status."""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence

from datasets import list_datasets
from datasets.argtypes import non_negative_int, positive_int
from datasets.episodes.providers import get_context, list_contexts
from datasets.io.pairs import IMAGES_DIR, MASKS_DIR
from utils.cli import HelpFormatter, add_dataclass_options, run_cli
from utils.inference import TTA_MODES

from .run import STORED_ORIENTATION, PredictConfig, PredictSummary, predict
from .writers import OVERLAY_DIR, PROBABILITIES_SUFFIX

__all__ = ["PredictParser", "build_predict_parser", "main", "DEFAULT_OVERLAY_SLICES"]

DEFAULT_OVERLAY_SLICES = 3  # --save_overlays without a number: the 3 slices of a volume with the most foreground


class PredictParser(argparse.ArgumentParser):
    """``predict.py``'s parser; :meth:`parse_config` returns a :class:`PredictConfig`."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.context_option_names: list[str] = []  # the batch contexts' options, added by build_predict_parser

    def parse_config(self, args: Sequence[str] | None = None) -> PredictConfig:
        parsed = self.parse_args(args)
        names = {item.name for item in dataclasses.fields(PredictConfig)}
        options = {name: getattr(parsed, name) for name in self.context_option_names}
        return PredictConfig(**{key: value for key, value in vars(parsed).items() if key in names},
                             context_options=options)


def build_predict_parser() -> PredictParser:
    """The options of ``predict.py``."""
    parser = PredictParser(description="Segment NIfTI volumes, DICOM series or images with a trained checkpoint of "
                                       "any registered model and data set.",
                           formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by train.py / train_<set>.py")
    parser.add_argument("--input", "-i", required=True,
                        help="a file (.nii/.nii.gz, .npz/.npy.h5, .png/.jpg/.bmp), a DICOM series folder, or a folder "
                             "of those")
    parser.add_argument("--output", "-o", required=True, help="output folder")
    parser.add_argument("--dataset", default=None,
                        help=f"data set whose preprocessing applies ({', '.join(list_datasets())}, or a prepared own "
                             f"data set's folder); default: the checkpoint's training set")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none", help="mixed precision")
    parser.add_argument("--batch_size", "--batch-size", dest="batch_size", type=positive_int, default=16,
                        help="slices per inference batch (images: one at a time)")
    parser.add_argument("--tta", choices=TTA_MODES, default="none",
                        help="test-time augmentation: flip = average the softmax probabilities over the input and its "
                             "mirror images (4 forwards)")
    parser.add_argument("--save_probabilities", "--save-probabilities", action="store_true",
                        help=f"also write <name>{PROBABILITIES_SUFFIX} (float16 [K, ...], compressed)")
    parser.add_argument("--save_overlays", "--save-overlays", type=non_negative_int, nargs="?",
                        const=DEFAULT_OVERLAY_SLICES, default=0, metavar="N",
                        help=f"also write {OVERLAY_DIR}/<name>.png: image | prediction of the N slices with the most "
                             f"foreground (images: the image; N defaults to {DEFAULT_OVERLAY_SLICES})")
    parser.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs exist")
    parser.add_argument("--orientation", default=None,
                        help="volumes: the voxel orientation the model was trained in, as axis codes (e.g. LPS), or "
                             f"'{STORED_ORIENTATION}' to keep each input's voxel order (default: the data set's)")
    parser.add_argument("--support", default=None, metavar="DIR",
                        help=f"support-set models (MatchSeg, UniverSeg): a folder of labelled examples, "
                             f"{IMAGES_DIR}/<stem>.png|jpg|bmp with {MASKS_DIR}/<stem>.png (binary 0/255 or class "
                             f"indices), from which each input's supports are chosen (default: the checkpoint's "
                             f"training split, when its files are here)")
    for name in list_contexts():
        provider = get_context(name)
        group = parser.add_argument_group(f"batch context: {name} ({provider.description})")
        parser.context_option_names += add_dataclass_options(
            group, dataclasses.fields(provider.options), None, " (default: the checkpoint's)")
    return parser


def main(argv: Sequence[str] | None = None, entry: Callable[[PredictConfig], PredictSummary] = predict) -> int:
    """``predict.py``: exit 0 when every input was segmented (or skipped), 1 when some failed, 2 for a bad
    checkpoint / option / input path (one ``error:`` line)."""
    config = build_predict_parser().parse_config(argv)
    result: list[PredictSummary] = []
    status = run_cli(lambda c: result.append(entry(c)), config)
    if status:
        return status
    return 1 if result[0].failed else 0

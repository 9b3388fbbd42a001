"""Export a trained checkpoint's network for viewers and servers (3D Slicer, MONAI Deploy, Triton, onnxruntime):

    python export.py --checkpoint runs/synapse_small_224/last.pth --format onnx --out synapse.onnx

writes ``synapse.onnx`` and ``synapse.onnx.json`` (input size, channels, normalisation, classes, the preprocessing of
raw scans, the parity figures), after checking that the exported network's logits equal the eager model's on fixed
inputs. ``--format torch_export`` writes a ``torch.export`` program (``.pt2``). See docs/api.md#export and
utils/export.py.
"""
import argparse
import sys

from utils.cli import HelpFormatter, run_cli
from utils.export import FORMATS, ExportConfig, export


def build_export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Export a checkpoint's network (ONNX or torch.export) with its "
                                                 "preprocessing described in a JSON beside it, parity checked.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by train.py")
    parser.add_argument("--format", required=True, choices=FORMATS, help="onnx (checked with onnxruntime) or "
                                                                         "torch_export (.pt2, torch.export.load)")
    parser.add_argument("--out", required=True, help="the network file to write (FILE.json is written beside it)")
    parser.add_argument("--dataset", default=None, help="data set whose preprocessing the JSON describes (default: "
                                                        "the checkpoint's)")
    parser.add_argument("--support_size", type=int, default=None,
                        help="support-set models: the fixed number k of supports (default: the checkpoint's)")
    parser.add_argument("--batch_size", type=int, default=2,
                        help="batch of the example input: the batch of an export whose batch axis cannot be dynamic "
                             "(Sim-MPNet, torch.export of support-set models); the others take any batch")
    parser.add_argument("--overwrite", action="store_true", help="replace FILE and FILE.json if they exist")
    return parser


def main(argv=None) -> int:
    config = ExportConfig(**vars(build_export_parser().parse_args(argv)))

    def run(config: ExportConfig) -> None:
        record = export(config)
        check = record["parity"]
        print(f"{record['model']} -> {config.out} ({record['exporter']}) + {config.out}.json: max |exported - eager| "
              f"{check['max_abs_difference']:.3g} ({check['tolerance']}), argmax agreement "
              f"{check['argmax_agreement']:.4%}")

    return run_cli(run, config)


if __name__ == "__main__":
    sys.exit(main())

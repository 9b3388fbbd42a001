"""Speed of ``python -m datasets.prepare.own`` on the raw phantom sets: cases per second, per worker count.

    python benchmarks/bench_own_prepare.py --format nnunet --count 40 --workers 1 2 --json benchmarks/results/x.json
    python benchmarks/bench_own_prepare.py --format folder --count 200 --size 128

The phantom of ``--format`` (``python -m datasets.phantoms --format``: nnunet CT volumes of 40 x 40 x 6 voxels, msd
2-channel 4-D MRI, or folder RGB PNGs of ``--size`` pixels) is written once with ``--count`` training cases; then
``prepare_own`` runs ``--repeats`` times per worker count, imports excluded, each into a new folder; the best run is
reported (the machine may be shared) with the load average at the start, since other jobs on the cores slow it down.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.io.atomic import atomic_write_text  # noqa: E402
from datasets.own.preparation import OwnOptions, prepare_own  # noqa: E402
from datasets.phantoms.own import RAW_FORMATS, write_raw_phantom  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=sorted(RAW_FORMATS), default="nnunet")
    parser.add_argument("--count", type=int, default=40, help="training cases of the phantom")
    parser.add_argument("--size", type=int, default=128, help="folder: picture height and width")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the results here (atomically)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    counts = {"num_train": args.count, **({"size": args.size} if args.format == "folder" else {})}
    with tempfile.TemporaryDirectory() as tmp:
        src = write_raw_phantom(args.format, os.path.join(tmp, "raw"), **counts)
        cases = sum(1 for _ in os.scandir(os.path.join(src, "labelsTr" if args.format != "folder" else "masks")))
        if args.format == "nnunet":
            cases += sum(1 for _ in os.scandir(os.path.join(src, "labelsTs")))
        options = {"channels": (0,)} if args.format == "msd" else {}
        results = {}
        for workers in args.workers:
            seconds = []
            for repeat in range(args.repeats):
                start = time.perf_counter()
                prepare_own(src, os.path.join(tmp, f"out_{workers}_{repeat}"),
                            OwnOptions(workers=workers, progress=False, **options))
                seconds.append(time.perf_counter() - start)
            results[f"workers_{workers}"] = {"best_s": min(seconds), "cases_per_s": cases / min(seconds)}
            print(f"{args.format}: {cases} cases, --workers {workers}: {min(seconds):.2f} s, "
                  f"{cases / min(seconds):.1f} cases/s")
    report = {"config": {"format": args.format, "cases": cases, "repeats": args.repeats, "cpu_count": os.cpu_count(),
                         "load_average_at_start": os.getloadavg()[0]}, **results}
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()

"""The command line of ``protocol.py``: run a protocol (``--protocol``) or combine runs' results (``--table``)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from datasets.protocols import list_protocols
from utils.protocol.columns import check_forwarded, run_protocol
from utils.protocol.results import combine_tables


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protocol.py", description="Run one of MatchSeg's evaluation protocols and write a paper-style table "
                                        "(or combine the results of several runs with --table).",
        epilog="Options after -- go to every column's test parser (see python test.py --dataset NAME --help), e.g. "
               "-- --tta flip.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--protocol", choices=list_protocols(), help="protocol to run (datasets/protocols.py)")
    mode.add_argument("--table", nargs="+", metavar="RESULTS_JSON",
                      help="print one table of several runs' results.json (same protocol), one row each")
    parser.add_argument("--checkpoint", nargs="+", help="checkpoint(s) of the run; each column takes the one trained "
                                                        "on its source data set")
    parser.add_argument("--output_dir", default=None,
                        help="default: <directory of the first checkpoint>/protocol_<name>")
    parser.add_argument("--data_root", default=None,
                        help="data sets in DATA_ROOT/<BUSI|BUS|GlaS|HAM10000>, lists in DATA_ROOT/lists/lists_<name> "
                             "(the phantom layout); default: each data set's own paths")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--label", default=None, help="row label of this run (default: the checkpoint's arch)")
    parser.add_argument("--published", action="store_true", help="add the paper's rows to the table")
    return parser


RUN_ONLY_OPTIONS = ("checkpoint", "output_dir", "data_root", "label")


def main(argv: Sequence[str] | None = None) -> int:
    """``protocol.py``: exit 0 on success, 2 for bad input (one ``error:`` line)."""
    from utils.cli import run_cli  # the scripts' error handler

    argv = list(sys.argv[1:] if argv is None else argv)
    forwarded: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, forwarded = argv[:split], argv[split + 1:]
    parser = build_parser()
    options = parser.parse_args(argv)
    options.forwarded = forwarded
    if options.table:
        given = [f"--{name}" for name in RUN_ONLY_OPTIONS if getattr(options, name) is not None]
        if given or forwarded:
            parser.error(f"--table combines existing results; {', '.join(given) or '--'} only apply to --protocol")
        return run_cli(lambda o: print(combine_tables(o.table, o.published), end=""), options)
    if not options.checkpoint:
        parser.error("--protocol needs --checkpoint")
    try:
        check_forwarded(forwarded)
    except ValueError as exc:
        parser.error(str(exc))
    return run_cli(run_protocol, options)

"""Run one of MatchSeg's evaluation protocols (:mod:`datasets.protocols`) and write a paper-style results table.

    python protocol.py --protocol busi_to_bus --checkpoint runs/busi_unet_128/last.pth [--published]
    python protocol.py --protocol single_domain --checkpoint busi.pth bus.pth glas.pth
    python protocol.py --protocol ham10000_nv --checkpoint ham.pth --data_root data/phantom -- --tta flip
    python protocol.py --table a/results.json b/results.json [--published]

Each column of the protocol gets the checkpoint trained on that column's source data set (the run option
``dataset`` the checkpoint records, ``utils.config.saved_options``): none or several -> an error naming the
column; a checkpoint that no column uses
-> an error naming it. Every column is evaluated with the test entry (:func:`utils.evaluator.evaluate`, its config
built by the test parser as ``test.py`` does) into ``<output_dir>/<column>/`` (summary.json, metrics.csv, log.txt);
then ``<output_dir>/results.json`` (per column: data set, list, number of images, DSC, IoU, HD95 as fractions /
pixels; the average; checkpoints; arch), ``<output_dir>/results.md`` (the table, DSC/IoU in %, 2 decimals) and
``<output_dir>/results.html`` (a page: ours per column, linking each column's test page, and the paper's table with
our row above it and the gap to each published cell coloured) are written and the table printed. Options after
``--`` go to every column's test parser (e.g. ``--tta flip``).
``--data_root DIR``: the data sets lie as the phantom writer lays them out, ``DIR/<BUSI|BUS|GlaS|HAM10000>`` and
lists ``DIR/lists/lists_<name>``; default: each data set's own paths (``./data/<name>``, ``./lists/lists_<name>``).

Bad input (checkpoint, data, options) -> one ``error: <file>: <problem>`` line, exit status 2, and nothing left of
the outputs this run created.

The package: ``columns`` (checkpoints -> columns, the averages, evaluating every column), ``results`` (results.json,
the markdown table, the results page, combining runs), ``command`` (the command line of ``protocol.py``).
"""
from .command import main

__all__ = ["main"]

"""Preparations: one module per data set, ``python -m datasets.prepare.<set> --help``, that converts the official
download into the prepared layout its reader (``datasets/<set>.py``) reads, with the preprocessing the spec shares
with prediction on raw inputs (e.g. Synapse's HU window, ACDC's min-max normalisation).

Shared here: :mod:`.splits` (contiguous, optionally seeded, blocks of the sorted names), :mod:`.cli` (the colour
preparations' options and report) and :mod:`.binary_sets` (MatchSeg's binary-mask sets: BUSI, BUS, GlaS,
HAM10000). Every preparation loads and checks all its inputs before it writes anything.
"""

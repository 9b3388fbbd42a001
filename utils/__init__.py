"""The engine: training, evaluation, inference and figures for every registered model on every registered data set.

It keeps the top-level name ``utils`` of the authors' release layout (their ``train_*.py`` / ``test_*.py`` import
from ``utils``), although it is the codebase's engine rather than a bag of helpers. It names no model and no data set:
what differs comes from the registries (``networks``: models, their hooks and recipes; ``datasets``: data sets,
their readers and the batch-context providers). Imports go one way, ``utils -> networks, datasets``; neither of those
imports ``utils`` (a family's own figures, e.g. ``networks.sim_mpnet.figures``, are functions of arrays and models,
laid out by ``visualize.py``).

Run configuration and the command line
    ``config`` (``TrainConfig`` as option groups, ``EvalConfig``, ``saved_options``: the groups a checkpoint or
    config.json recorded), ``cli`` (the scripts' parsers, built from the registries; the error handler)
Training
    ``trainer`` (the loop and its hooks into the model), ``train_data`` (the training split, its batches per epoch),
    ``optimisation`` (the recipe applied: optimiser, learning rate per epoch), ``resume`` (what a training checkpoint
    holds, exact continuation), ``distributed`` (torchrun / DDP), ``batch_context`` (the model's batch context, e.g.
    support sets, on the training, validation and test data), ``model_input`` (channel count and intensities the
    network wants)
Checkpoints and files
    ``checkpoint`` (format, upgrades of older files, atomic writes, rebuilding a model), ``runlog`` (logs,
    TensorBoard, run bookkeeping)
Evaluation and inference
    ``evaluator`` (the test scripts and validation), ``inference`` (slice-wise volume and image inference, TTA),
    ``metrics`` (DSC, HD95, Jaccard, ASD), ``protocol`` (paper-style evaluation protocols), ``predict`` (a checkpoint
    on unlabeled scans and images)
Reports and figures
    ``report`` (HTML results pages), ``plots`` (training curves, prediction grids, run-log readers), ``visual``
    (overlays, panel grids, legends, PNG)
"""

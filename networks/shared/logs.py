"""The models' log lines (the weight file loaded, a missing one) go to a child of the runs' logger (``simmpnet``,
``utils.runlog``), so that a run shows them once on its console and in its log.txt; outside a run, Python's
last-resort handler prints a warning once on stderr."""
from __future__ import annotations

import logging

RUN_LOGGER = "simmpnet"  # utils.runlog.LOGGER_NAME (the models do not import the engine)


def model_logger(module: str) -> logging.Logger:
    """The logger of a model module: ``simmpnet.<module>``."""
    return logging.getLogger(f"{RUN_LOGGER}.{module}")

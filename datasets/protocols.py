"""MatchSeg's evaluation protocols (Huo et al., arXiv 2403.15901) and its published results tables, as data.

A :class:`Protocol` says which data set(s) a model is trained on and which (data set, list) each column of the
paper's table tests; ``utils/protocol.py`` (``python protocol.py --protocol NAME --checkpoint ...``) runs them and
prints our row beside the paper's (``PUBLISHED``, ``matchseg_spec.md`` §7; DSC/IoU in %).

    busi, bus, glas   single domain: train on the set, test its test split (DSC, IoU)
    single_domain     the three columns at once; each needs a checkpoint trained on its own set
    busi_to_bus       cross domain: train on BUSI, test on ALL BUS images (list ``all``: train + val + test)
    bus_to_busi       cross domain: train on BUS, test on all BUSI images
    ham10000_nv       train on HAM10000's NV type (the ``ham10000`` set's train split), test on each of the six
                      other types (lists ``test_<dx>``, every image of the type); ``Avg`` = the image-count-weighted
                      mean DSC over the six types (the paper's average, ``matchseg_spec.md`` §6)

This module is data only: it imports neither ``utils`` nor ``networks``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from .ham10000 import ham_test_split
from .prepare.binary_sets import ALL_LIST
from .rgb import RGB_SPLITS

AVERAGES = ("none", "image_weighted")  # image_weighted: sum(n_i * m_i) / sum(n_i), n_i = images of column i
METRICS = ("dice", "jaccard")  # the evaluator's names of DSC and IoU
METRIC_TITLES = {"dice": "DSC", "jaccard": "IoU"}
AVERAGE_COLUMN = "Avg"  # name of the average column (tables, ``PUBLISHED`` rows)
TEST_SPLIT = RGB_SPLITS[2]
COLUMN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a column's name is also its output folder


@dataclass(frozen=True)
class Column:
    """One column of a results table: the model trained on ``train_dataset`` tested on ``dataset``'s list
    ``test_list``.

    ``name`` is the column's key (results, ``PUBLISHED``) and its output folder; ``title`` its table header
    (default: the name). ``train_dataset`` None: the protocol's only training set. ``weight``: the column's number
    of images in the full official data set, the weight of the *published* average (our average weighs by the
    number of images actually evaluated).
    """

    name: str
    dataset: str
    test_list: str
    weight: float | None = None
    train_dataset: str | None = None
    title: str | None = None

    @property
    def header(self) -> str:
        return self.title or self.name


@dataclass(frozen=True)
class Protocol:
    """A paper table: the training set(s), the columns, the metrics shown and how columns are averaged."""

    name: str
    title: str
    train_datasets: tuple[str, ...]
    columns: tuple[Column, ...]
    average: str = "none"
    metrics: tuple[str, ...] = METRICS
    note: str = ""  # shown under the table
    published: str | None = field(default=None)  # key of PUBLISHED (default: the protocol's name)

    def __post_init__(self) -> None:
        if self.average not in AVERAGES:
            raise ValueError(f"protocol {self.name}: average must be one of {', '.join(AVERAGES)}, "
                             f"got {self.average!r}")
        if not self.metrics or any(metric not in METRICS for metric in self.metrics):
            raise ValueError(f"protocol {self.name}: metrics must be some of {', '.join(METRICS)}, got {self.metrics}")
        if not self.train_datasets or not self.columns:
            raise ValueError(f"protocol {self.name}: needs a training data set and a column")
        names = [column.name for column in self.columns]
        if len(set(names)) != len(names) or AVERAGE_COLUMN in names:
            raise ValueError(f"protocol {self.name}: column names must be unique and not {AVERAGE_COLUMN!r}: {names}")
        columns = []
        for column in self.columns:
            if not COLUMN_NAME.match(column.name):
                raise ValueError(f"protocol {self.name}: column name {column.name!r} is not a plain folder name")
            if column.train_dataset is None:
                if len(self.train_datasets) != 1:
                    raise ValueError(f"protocol {self.name}: column {column.name} must name its training data set "
                                     f"(the protocol trains on {', '.join(self.train_datasets)})")
                column = replace(column, train_dataset=self.train_datasets[0])
            elif column.train_dataset not in self.train_datasets:
                raise ValueError(f"protocol {self.name}: column {column.name} trains on {column.train_dataset}, "
                                 f"not one of {', '.join(self.train_datasets)}")
            columns.append(column)
        object.__setattr__(self, "columns", tuple(columns))

    @property
    def published_key(self) -> str:
        return self.published or self.name

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)


# ----------------------------------------------------------------------------------------------------------------
# The protocols
# ----------------------------------------------------------------------------------------------------------------
SINGLE_DOMAIN_COLUMNS = (
    Column("BUSI", "busi", TEST_SPLIT, train_dataset="busi"),
    Column("BUS", "bus", TEST_SPLIT, train_dataset="bus"),
    Column("GlaS", "glas", TEST_SPLIT, train_dataset="glas"),
)
# Column name, lesion type, number of images of the type in HAM10000 (the weights of the published average),
# in the order of the paper's table.
HAM_COLUMNS = (("AKIEC", "akiec", 327), ("BCC", "bcc", 514), ("BKL", "bkl", 1099), ("DF", "df", 115),
               ("MEL", "mel", 1113), ("VASC", "vasc", 142))
IMAGE_WEIGHTED_NOTE = "Avg = mean over the columns weighted by their number of images"


def _single(column: Column) -> Protocol:
    return Protocol(name=column.dataset, title=f"Single domain: {column.name} (train and test on {column.name})",
                    train_datasets=(column.dataset,), columns=(column,), published="single_domain")


PROTOCOLS: dict[str, Protocol] = {protocol.name: protocol for protocol in (
    *(_single(column) for column in SINGLE_DOMAIN_COLUMNS),
    Protocol(name="single_domain", title="Single domain: BUSI, BUS, GlaS (each trained on its own set)",
             train_datasets=("busi", "bus", "glas"), columns=SINGLE_DOMAIN_COLUMNS),
    Protocol(name="busi_to_bus", title="Cross domain: train on BUSI, test on all BUS images",
             train_datasets=("busi",), columns=(Column("BUSI_to_BUS", "bus", ALL_LIST, title="BUSI->BUS"),),
             published="cross_domain"),
    Protocol(name="bus_to_busi", title="Cross domain: train on BUS, test on all BUSI images",
             train_datasets=("bus",), columns=(Column("BUS_to_BUSI", "busi", ALL_LIST, title="BUS->BUSI"),),
             published="cross_domain"),
    Protocol(name="ham10000_nv", title="HAM10000: train on NV, test on each other lesion type (DSC)",
             train_datasets=("ham10000",),
             columns=tuple(Column(name, "ham10000", ham_test_split(dx), weight=count)
                           for name, dx, count in HAM_COLUMNS),
             average="image_weighted", metrics=("dice",), note=IMAGE_WEIGHTED_NOTE),
)}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; ValueError listing the known ones otherwise."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}") from None


def list_protocols() -> list[str]:
    return list(PROTOCOLS)


# ----------------------------------------------------------------------------------------------------------------
# Published results (MatchSeg README tables, matchseg_spec.md §7), in %.
# PUBLISHED[table][model] = {column name: (DSC, IoU)} or, for HAM10000, {column name: DSC} with the printed
# average under AVERAGE_COLUMN. The single-domain protocols busi / bus / glas read the single_domain table, the
# cross-domain ones the cross_domain table (Protocol.published_key).
# ----------------------------------------------------------------------------------------------------------------
PUBLISHED_SOURCE = "MatchSeg (Huo et al., arXiv 2403.15901), README tables; DSC/IoU in %"
PUBLISHED_MODELS = ("UNet", "AttentionUNet", "ACC-UNet", "UNext", "UCTransNet", "PA-Net", "ASG-Net", "UniverSeg",
                    "MatchSeg")
PUBLISHED_PARAMS_M = dict(zip(PUBLISHED_MODELS, (34.53, 34.88, 16.77, 1.47, 66.34, 8.94, 34.06, 1.18, 7.79)))

_SINGLE = (  # BUSI DSC, IoU, BUS DSC, IoU, GlaS DSC, IoU
    (79.29, 71.14, 89.08, 81.73, 89.58, 82.16),
    (79.35, 71.28, 88.12, 80.45, 90.00, 82.80),
    (74.59, 65.39, 71.16, 58.98, 77.82, 64.88),
    (69.50, 58.80, 70.74, 58.68, 80.96, 69.08),
    (78.17, 69.02, 87.96, 79.86, 88.53, 80.15),
    (77.02, 67.63, 81.19, 70.45, 84.89, 74.54),
    (50.60, 42.40, 81.14, 70.46, 73.51, 59.28),
    (52.14, 40.21, 59.85, 48.42, 60.79, 44.79),
    (81.03, 72.56, 90.58, 83.23, 90.92, 84.04),
)
_CROSS = (  # BUSI->BUS DSC, IoU, BUS->BUSI DSC, IoU
    (74.72, 67.16, 56.85, 49.36),
    (76.18, 67.66, 56.85, 49.32),
    (61.62, 53.55, 42.81, 33.79),
    (56.37, 47.30, 39.93, 30.92),
    (67.52, 58.21, 54.91, 47.16),
    (70.99, 61.80, 49.15, 40.28),
    (47.23, 34.96, 49.70, 40.44),
    (51.75, 40.91, 35.19, 26.05),
    (78.07, 68.86, 59.27, 51.53),
)
_HAM = (  # AKIEC, BCC, BKL, DF, MEL, VASC, Avg (DSC)
    (75.16, 68.07, 84.67, 83.50, 91.20, 81.99, 83.19),
    (76.72, 69.61, 85.04, 83.00, 92.14, 83.71, 84.08),
    (72.77, 64.71, 84.15, 80.39, 90.45, 82.91, 82.96),  # Avg as printed; the types give 81.94 (a typo, spec §6)
    (79.75, 70.83, 85.73, 83.17, 91.10, 79.39, 84.26),
    (80.31, 71.91, 86.18, 83.82, 92.23, 82.72, 85.19),
    (72.22, 68.02, 83.76, 80.70, 89.34, 80.53, 81.83),
    (51.39, 40.26, 45.33, 48.45, 50.27, 31.55, 46.42),
    (74.36, 66.78, 77.59, 77.37, 82.99, 74.39, 77.17),
    (80.82, 73.53, 86.44, 82.97, 91.64, 82.28, 85.33),
)


def _pairs(names: tuple[str, ...], values: tuple[float, ...]) -> dict[str, tuple[float, float]]:
    return {name: (values[2 * i], values[2 * i + 1]) for i, name in enumerate(names)}


PUBLISHED: dict[str, dict[str, dict[str, float | tuple[float, float]]]] = {
    "single_domain": {model: _pairs(("BUSI", "BUS", "GlaS"), row) for model, row in zip(PUBLISHED_MODELS, _SINGLE)},
    "cross_domain": {model: _pairs(("BUSI_to_BUS", "BUS_to_BUSI"), row)
                     for model, row in zip(PUBLISHED_MODELS, _CROSS)},
    "ham10000_nv": {model: dict(zip((*(name for name, _, _ in HAM_COLUMNS), AVERAGE_COLUMN), row))
                    for model, row in zip(PUBLISHED_MODELS, _HAM)},
}


def published_rows(protocol: Protocol) -> dict[str, dict[str, dict[str, float]]]:
    """{model: {column name (or AVERAGE_COLUMN): {metric: value in %}}} of the protocol's columns in the paper's
    table (a (DSC, IoU) pair gives dice and jaccard, a single number dice)."""
    names = {column.name for column in protocol.columns} | {AVERAGE_COLUMN}
    rows = {}
    for model, cells in PUBLISHED.get(protocol.published_key, {}).items():
        rows[model] = {name: dict(zip(METRICS, value if isinstance(value, tuple) else (value,)))
                       for name, value in cells.items() if name in names}
    return rows

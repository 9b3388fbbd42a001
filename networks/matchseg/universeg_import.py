"""A bare UniverSeg weights file as a ``universeg`` checkpoint (the importer ``networks.matchseg`` registers), in its
own module: it builds the network (:mod:`.model`), which loads weights through :mod:`.universeg_weights`, so the
importer in either of those would make the two import each other."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .model import MatchSeg
from .universeg_weights import ARCH, file_config, fit_to_model, strict_problem, universeg_key_map

__all__ = ["universeg_checkpoint"]


def universeg_checkpoint(state: Any) -> dict:
    """A UniverSeg state_dict as a checkpoint of ``universeg`` (arch, model_config read off the tensors, weights
    under our names), checked tensor by tensor against the model that config builds; ValueError naming the keys
    otherwise. Holds no training ``args``: a test run names its support pool (docs/predict.md)."""
    mapping = universeg_key_map(state)
    config = file_config(state)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        expected = MatchSeg(config, pretrained=False).state_dict()
    fit = fit_to_model(state, mapping, expected)
    problem = strict_problem(fit, config, state)
    if problem is not None:
        raise ValueError(problem)
    return {"arch": ARCH, "model_config": dataclasses.asdict(config), "model": fit.tensors}

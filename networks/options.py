"""Command-line metadata of config fields, in a module of its own: the registry and the training recipe both
declare options with it, and the registry reads the recipe (:mod:`networks.recipe`), so neither can hold it."""
from __future__ import annotations

__all__ = ["cli_option"]


def cli_option(help_text: str, **argparse_extras) -> dict:
    """Metadata of a config field that the scripts expose as ``--<field name>`` (``choices=...``, ``minimum=0``)."""
    return {"help": help_text, **argparse_extras}

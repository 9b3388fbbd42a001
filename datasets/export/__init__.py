"""Exports of prepared data sets to other tools' formats: ``python -m datasets.export.nnunet`` (nnU-Net v2 raw, so
that nnU-Net itself runs as a baseline on identical data and splits)."""

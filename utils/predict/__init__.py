"""Segment unlabeled scans and images with a trained checkpoint (``predict.py``), for every registered model and
data set: the convention of nnU-Net's ``predict -i INPUT -o OUTPUT``.

The engine names no model and no data set. The model is the checkpoint's (``build_model_from_checkpoint``), the data
set the one it was trained on (its saved run options, ``utils.config.saved_options``, or ``--dataset``), and
everything specific to a data set comes from its spec: the kind (volume / image), channels, class names, the key of
the image in its prepared files (its reader's ``image_key``) and the preprocessing of raw inputs (``spec.raw``,
:class:`datasets.registry.RawInput`: the preparation's own intensity normalisation, the training orientation and
slice axes of volumes, the preparation's resize of images).

Inputs: a file, or a folder of files and DICOM series folders (a folder holding DICOM files is one series):

* NIfTI (``.nii``, ``.nii.gz``) or a DICOM series (volume sets): voxels (x, y, z) + affine -> reoriented to the
  training orientation -> normalised -> slices [D, H, W] -> ``predict_volume`` (the test scripts' inference: cubic
  resize to the network, batched, nearest resize back) -> labels back to the input's voxel order -> NIfTI with the
  input's affine (its header for NIfTI; for DICOM the series' origin, spacing and direction).
* PNG / JPEG / BMP (image sets): uint8 [H, W, 3] -> the preparation's resize to the network's size -> normalised ->
  ``predict_image`` -> labels resized back to H x W (nearest) -> PNG of class indices.
* the prepared formats (``.npz``, ``.npy.h5`` / ``.h5``): the stored image as the test scripts read it (no
  preprocessing but the RGB sets' normalisation, which their evaluation items also get). Volumes are written as the
  test scripts' ``--is_savenii`` writes its predictions (axes reversed, unit spacing); they have no geometry, so
  volumes.csv gives no mL for them.

Outputs in ``--output``: ``<name>.nii.gz`` or ``<name>.png`` (label map), optionally ``<name>_probabilities.npz``
(float16 [K, ...] on the label map's axes, compressed) and ``overlays/<name>.png``, and ``volumes.csv`` (per input
and structure: voxels and mL from the voxel size; pixels for images). Every file is written atomically, the label map
last, so an input whose outputs exist is done: it is skipped unless ``--overwrite``. A bad input is reported in one
line (``error: <path>: <problem>``) and the others are still processed; the run then ends with the list of failures.

By concern: :mod:`.inputs` (finding the inputs), :mod:`.readers` (an input as the data set holds it; the file formats
are :mod:`datasets.io`'s), :mod:`.geometry` (raw voxel order <-> training layout), :mod:`.writers` (probabilities,
volumes.csv, supports.csv), :mod:`.segmenter` (arrays in, arrays out: :class:`Segmenter`, which the Python API
``api.py`` shares), :mod:`.run` (:class:`Predictor`, :func:`predict`), :mod:`.cli` (the options, :func:`main`).
"""
from datasets.io.dicom_series import read_dicom_series
from datasets.io.nifti import read_nifti

from .cli import DEFAULT_OVERLAY_SLICES, PredictParser, build_predict_parser, main
from .geometry import SliceLayout, voxel_volume_mm3
from .inputs import IMAGE_SUFFIXES, NIFTI_SUFFIXES, PREPARED_SUFFIXES, InputItem, file_format, find_inputs
from .readers import read_picture, read_raw_volume
from .run import STORED_ORIENTATION, PredictConfig, Predictor, PredictSummary, predict
from .segmenter import PictureSegmentation, Segmenter, VolumeSegmentation, load_segmenter
from .writers import existing_labels, volume_rows, volumes_csv_text

__all__ = ["PredictConfig", "PredictSummary", "Predictor", "InputItem", "find_inputs", "file_format", "SliceLayout",
           "predict", "main", "build_predict_parser", "PredictParser", "read_nifti",
           "read_dicom_series", "read_raw_volume", "read_picture", "existing_labels", "volume_rows",
           "volumes_csv_text", "voxel_volume_mm3", "NIFTI_SUFFIXES", "PREPARED_SUFFIXES", "IMAGE_SUFFIXES",
           "STORED_ORIENTATION", "DEFAULT_OVERLAY_SLICES", "Segmenter", "load_segmenter",
           "VolumeSegmentation", "PictureSegmentation"]

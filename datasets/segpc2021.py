"""SegPC-2021 (multiple-myeloma plasma cells), microscopy RGB, in the prepared format.

Layout (written by ``python -m datasets.prepare.segpc2021``; see :mod:`datasets.rgb`):

    data/SegPC2021/<image>_<n>.npz      one crop centred on cell n of official image <image>
                                        (``--mode image``: ``<image>.npz``, the whole field)
                                        image uint8 [S,S,3], label uint8 [S,S]
    lists/lists_SegPC2021/{train,val,test}.txt

Labels: 0 background, 1 cytoplasm, 2 nucleus (the official instance masks mark cytoplasm
with grey value 20 and nucleus with 40).
The registry entry (``get_dataset("segpc2021")``) is declared at the end of this file.
"""
from __future__ import annotations

from .augment_rgb import RGBAugment, normalize_image
from .registry import DatasetSpec, PhantomSpec, RawInput, register_dataset
from .rgb import RGB_SPLITS, RGBSegmentationDataset, resize_image, resize_label

SEGPC2021_CLASS_NAMES = ("cytoplasm", "nucleus")
SEGPC2021_NUM_CLASSES = len(SEGPC2021_CLASS_NAMES) + 1
SEGPC2021_DIR_NAME = "SegPC2021"
SEGPC2021_LIST_DIR_NAME = "lists_SegPC2021"
BACKGROUND_LABEL, CYTOPLASM_LABEL, NUCLEUS_LABEL = 0, 1, 2
# Grey values of the official per-instance masks y/<image>_<n>.bmp.
MASK_BACKGROUND_VALUE, MASK_CYTOPLASM_VALUE, MASK_NUCLEUS_VALUE = 0, 20, 40
MASK_VALUE_TO_LABEL = {
    MASK_BACKGROUND_VALUE: BACKGROUND_LABEL,
    MASK_CYTOPLASM_VALUE: CYTOPLASM_LABEL,
    MASK_NUCLEUS_VALUE: NUCLEUS_LABEL,
}
SEGPC2021_IMAGE_DIR, SEGPC2021_MASK_DIR = "x", "y"
SEGPC2021_SUFFIX = ".bmp"
# Awesome-U-Net / TMUNet protocol: the official train + validation images pooled, split 50/20/30.
SEGPC2021_SPLIT_FRACTIONS = (0.5, 0.2, 0.3)
# Crop around each nucleus: its bounding box grown by scale * (box size) / 2 on every side.
SEGPC2021_CROP_SCALE = 2.5


def segpc_item_name(image_name: str, instance: str | None = None) -> str:
    """Entry of a whole field (``106``) or of the crop around one cell (``106_3``)."""
    return image_name if instance is None else f"{image_name}_{instance}"


class SegPC2021Dataset(RGBSegmentationDataset):
    """Prepared SegPC-2021 crops/fields; ``base_dir`` is the prepared folder (e.g. ``./data/SegPC2021``)."""


# ----------------------------------------------------------------------------- registry entry
SEGPC2021 = register_dataset(DatasetSpec(
    name="segpc2021", title="SegPC-2021 multiple-myeloma cells (microscopy)", class_names=SEGPC2021_CLASS_NAMES,
    in_chans=3, kind="image", reader=SegPC2021Dataset, root_path=f"./data/{SEGPC2021_DIR_NAME}",
    volume_path=f"./data/{SEGPC2021_DIR_NAME}", list_dir=f"./lists/{SEGPC2021_LIST_DIR_NAME}",
    train_split=RGB_SPLITS[0], val_split=RGB_SPLITS[1], test_split=RGB_SPLITS[2], train_transform=RGBAugment,
    phantom=PhantomSpec(dir_name=SEGPC2021_DIR_NAME, list_dir_name=SEGPC2021_LIST_DIR_NAME,
                        write="datasets.phantoms.segpc2021:write_segpc2021_phantom",
                        write_download="datasets.phantoms.segpc2021:write_segpc2021_download",
                        options=("num_train", "num_val", "num_test", "size")),
    prepare_module="datasets.prepare.segpc2021",
    # Raw RGB images as the preparation and the evaluation items treat them: resized (bilinear, antialiased) to the
    # network's size, the preparation's default, ImageNet-normalised; the label map goes back (nearest).
    raw=RawInput(normalize=normalize_image, resize=resize_image, resize_label=resize_label),
))

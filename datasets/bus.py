"""BUS (Yap et al. 2018, Dataset B): 163 breast ultrasound images with lesion masks, in the prepared format.

Official layout ``BUS/original/<name>.png`` with ``BUS/GT/<name>.png`` (same names, 0/255 masks). Grey ultrasound,
stored as 3 equal RGB channels (one 3-channel model fits all MatchSeg sets). Prepared by
``python -m datasets.prepare.bus`` (see :mod:`datasets.prepare.binary_sets`):

    data/BUS/000001.npz                      image uint8 [S,S,3], label uint8 [S,S] (0 background, 1 lesion)
    lists/lists_BUS/{train,val,test}.txt     70/10/20, deterministic

The registry entry (``get_dataset("bus")``) is declared at the end of this file.
"""
from __future__ import annotations

from .augment_rgb import RGBAugment, normalize_image
from .registry import DatasetSpec, PhantomSpec, RawInput, register_dataset
from .rgb import RGB_SPLITS, RGBSegmentationDataset, resize_image, resize_label

BUS_CLASS_NAMES = ("lesion",)
BUS_DIR_NAME = "BUS"
BUS_LIST_DIR_NAME = "lists_BUS"
BUS_ROOT = "BUS"  # folder of the official download
BUS_IMAGE_DIR = "original"
BUS_MASK_DIR = "GT"
BUS_IMAGE_SUFFIX = ".png"
BUS_SPLIT_FRACTIONS = (0.7, 0.1, 0.2)


class BUSDataset(RGBSegmentationDataset):
    """Prepared BUS images; ``base_dir`` is the prepared folder (e.g. ``./data/BUS``)."""


# ----------------------------------------------------------------------------- registry entry
BUS = register_dataset(DatasetSpec(
    name="bus", title="BUS breast ultrasound (Yap et al. Dataset B)", class_names=BUS_CLASS_NAMES, in_chans=3,
    kind="image", reader=BUSDataset, root_path=f"./data/{BUS_DIR_NAME}", volume_path=f"./data/{BUS_DIR_NAME}",
    list_dir=f"./lists/{BUS_LIST_DIR_NAME}", train_split=RGB_SPLITS[0], val_split=RGB_SPLITS[1],
    test_split=RGB_SPLITS[2], train_transform=RGBAugment,
    phantom=PhantomSpec(dir_name=BUS_DIR_NAME, list_dir_name=BUS_LIST_DIR_NAME,
                        write="datasets.phantoms.bus:write_bus_phantom",
                        write_download="datasets.phantoms.bus:write_bus_download",
                        options=("num_train", "num_val", "num_test", "size")),
    prepare_module="datasets.prepare.bus",
    raw=RawInput(normalize=normalize_image, resize=resize_image, resize_label=resize_label),
))

"""BUSI (Breast Ultrasound Images, Al-Dhabyani et al. 2020), benign and malignant lesions, in the prepared format.

Official download ``Dataset_BUSI_with_GT/{benign,malignant,normal}/<name>.png`` with masks ``<name>_mask.png``,
``<name>_mask_1.png``, ... (several masks of one image are united). The normal class (no lesion) is dropped:
437 benign + 210 malignant = 647 images. Grey ultrasound, stored as 3 equal RGB channels (one 3-channel model fits
all MatchSeg sets). Prepared by ``python -m datasets.prepare.busi`` (see :mod:`datasets.prepare.binary_sets`):

    data/BUSI/benign_1.npz                    image uint8 [S,S,3], label uint8 [S,S] (0 background, 1 lesion)
    lists/lists_BUSI/{train,val,test}.txt     70/10/20, stratified by class (benign / malignant), deterministic

The registry entry (``get_dataset("busi")``) is declared at the end of this file.
"""
from __future__ import annotations

from .augment_rgb import RGBAugment, normalize_image
from .registry import DatasetSpec, PhantomSpec, RawInput, register_dataset
from .rgb import RGB_SPLITS, RGBSegmentationDataset, resize_image, resize_label

BUSI_CLASS_NAMES = ("lesion",)
BUSI_DIR_NAME = "BUSI"
BUSI_LIST_DIR_NAME = "lists_BUSI"
BUSI_ROOT = "Dataset_BUSI_with_GT"  # folder of the official download
BUSI_CLASSES = ("benign", "malignant")  # kept
BUSI_DROPPED = ("normal",)  # no lesion: dropped
BUSI_IMAGE_SUFFIX = ".png"
BUSI_MASK_MARK = "_mask"  # <name>_mask.png, <name>_mask_1.png, ...
BUSI_SPLIT_FRACTIONS = (0.7, 0.1, 0.2)


class BUSIDataset(RGBSegmentationDataset):
    """Prepared BUSI images; ``base_dir`` is the prepared folder (e.g. ``./data/BUSI``)."""


# ----------------------------------------------------------------------------- registry entry
BUSI = register_dataset(DatasetSpec(
    name="busi", title="BUSI breast ultrasound (benign + malignant)", class_names=BUSI_CLASS_NAMES, in_chans=3,
    kind="image", reader=BUSIDataset, root_path=f"./data/{BUSI_DIR_NAME}", volume_path=f"./data/{BUSI_DIR_NAME}",
    list_dir=f"./lists/{BUSI_LIST_DIR_NAME}", train_split=RGB_SPLITS[0], val_split=RGB_SPLITS[1],
    test_split=RGB_SPLITS[2], train_transform=RGBAugment,
    phantom=PhantomSpec(dir_name=BUSI_DIR_NAME, list_dir_name=BUSI_LIST_DIR_NAME,
                        write="datasets.phantoms.busi:write_busi_phantom",
                        write_download="datasets.phantoms.busi:write_busi_download",
                        options=("num_train", "num_val", "num_test", "size")),
    prepare_module="datasets.prepare.busi",
    raw=RawInput(normalize=normalize_image, resize=resize_image, resize_label=resize_label),
))

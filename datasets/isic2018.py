"""ISIC-2018 Task 1 (skin lesion boundary segmentation), dermoscopy RGB, in the prepared format.

Layout (written by ``python -m datasets.prepare.isic2018``; see :mod:`datasets.rgb`):

    data/ISIC2018/ISIC_0000000.npz          image uint8 [S,S,3], label uint8 [S,S] (0 background, 1 lesion)
    lists/lists_ISIC2018/{train,val,test}.txt   lines like ``ISIC_0000000``

Split: the 2594 official training images, 1815 / 259 / 520 (train / val / test) as in
BCDU-Net / MCGU-Net and the methods that reuse their script (TransDeepLab, DAE-Former,
D-LKA Net); see ``datasets.prepare.isic2018`` for the order.
The registry entry (``get_dataset("isic2018")``) is declared at the end of this file.
"""
from __future__ import annotations

from .augment_rgb import RGBAugment, normalize_image
from .registry import DatasetSpec, PhantomSpec, RawInput, register_dataset
from .rgb import RGB_SPLITS, RGBSegmentationDataset, resize_image, resize_label

ISIC2018_CLASS_NAMES = ("lesion",)
ISIC2018_NUM_CLASSES = len(ISIC2018_CLASS_NAMES) + 1
ISIC2018_DIR_NAME = "ISIC2018"
ISIC2018_LIST_DIR_NAME = "lists_ISIC2018"
LESION_LABEL = 1
# Official download (https://challenge.isic-archive.com/data/#2018), Task 1 training data.
ISIC2018_IMAGE_DIR = "ISIC2018_Task1-2_Training_Input"
ISIC2018_MASK_DIR = "ISIC2018_Task1_Training_GroundTruth"
ISIC2018_IMAGE_SUFFIX = ".jpg"
ISIC2018_MASK_SUFFIX = "_segmentation.png"
# The published split of the 2594 training images (train, val, test).
ISIC2018_SPLIT_COUNTS = (1815, 259, 520)
ISIC2018_SPLIT_FRACTIONS = tuple(count / sum(ISIC2018_SPLIT_COUNTS) for count in ISIC2018_SPLIT_COUNTS)


class ISIC2018Dataset(RGBSegmentationDataset):
    """Prepared ISIC-2018 images; ``base_dir`` is the prepared folder (e.g. ``./data/ISIC2018``)."""


# ----------------------------------------------------------------------------- registry entry
ISIC2018 = register_dataset(DatasetSpec(
    name="isic2018", title="ISIC-2018 skin lesions (dermoscopy)", class_names=ISIC2018_CLASS_NAMES, in_chans=3,
    kind="image", reader=ISIC2018Dataset, root_path=f"./data/{ISIC2018_DIR_NAME}",
    volume_path=f"./data/{ISIC2018_DIR_NAME}", list_dir=f"./lists/{ISIC2018_LIST_DIR_NAME}",
    train_split=RGB_SPLITS[0], val_split=RGB_SPLITS[1], test_split=RGB_SPLITS[2], train_transform=RGBAugment,
    phantom=PhantomSpec(dir_name=ISIC2018_DIR_NAME, list_dir_name=ISIC2018_LIST_DIR_NAME,
                        write="datasets.phantoms.isic2018:write_isic2018_phantom",
                        write_download="datasets.phantoms.isic2018:write_isic2018_download",
                        options=("num_train", "num_val", "num_test", "size")),
    prepare_module="datasets.prepare.isic2018",
    # Raw RGB images as the preparation and the evaluation items treat them: resized (bilinear, antialiased) to the
    # network's size, the preparation's default, ImageNet-normalised; the label map goes back (nearest).
    raw=RawInput(normalize=normalize_image, resize=resize_image, resize_label=resize_label),
))

"""GlaS (MICCAI 2015 Gland Segmentation challenge, Warwick-QU): colon histology (H&E, RGB), glands, prepared.

Official layout (one folder, e.g. ``Warwick QU Dataset (Released 2016_07_08)/``): ``train_<n>.bmp`` (85),
``testA_<n>.bmp`` (60), ``testB_<n>.bmp`` (20), each with ``<name>_anno.bmp`` (gland instance map: 0 background,
1..k glands; binarised > 0), and ``Grade.csv``. Prepared by ``python -m datasets.prepare.glas``
(see :mod:`datasets.prepare.binary_sets`):

    data/GlaS/train_1.npz                    image uint8 [S,S,3], label uint8 [S,S] (0 background, 1 gland)
    lists/lists_GlaS/train.txt, val.txt      the official training images, 10% -> val (deterministic)
    lists/lists_GlaS/test.txt                testA + testB (80); also testA.txt and testB.txt

The registry entry (``get_dataset("glas")``) is declared at the end of this file.
"""
from __future__ import annotations

from .augment_rgb import RGBAugment, normalize_image
from .registry import DatasetSpec, PhantomSpec, RawInput, register_dataset
from .rgb import RGB_SPLITS, RGBSegmentationDataset, resize_image, resize_label

GLAS_CLASS_NAMES = ("gland",)
GLAS_DIR_NAME = "GlaS"
GLAS_LIST_DIR_NAME = "lists_GlaS"
GLAS_TRAIN_PREFIX = "train"
GLAS_TEST_PREFIXES = ("testA", "testB")
GLAS_IMAGE_SUFFIX = ".bmp"
GLAS_ANNO_MARK = "_anno"
GLAS_GRADE_CSV = "Grade.csv"
GLAS_VAL_FRACTION = 0.1


class GlaSDataset(RGBSegmentationDataset):
    """Prepared GlaS images; ``base_dir`` is the prepared folder (e.g. ``./data/GlaS``)."""


# ----------------------------------------------------------------------------- registry entry
GLAS = register_dataset(DatasetSpec(
    name="glas", title="GlaS colon glands (H&E histology)", class_names=GLAS_CLASS_NAMES, in_chans=3,
    kind="image", reader=GlaSDataset, root_path=f"./data/{GLAS_DIR_NAME}", volume_path=f"./data/{GLAS_DIR_NAME}",
    list_dir=f"./lists/{GLAS_LIST_DIR_NAME}", train_split=RGB_SPLITS[0], val_split=RGB_SPLITS[1],
    test_split=RGB_SPLITS[2], train_transform=RGBAugment,
    phantom=PhantomSpec(dir_name=GLAS_DIR_NAME, list_dir_name=GLAS_LIST_DIR_NAME,
                        write="datasets.phantoms.glas:write_glas_phantom",
                        write_download="datasets.phantoms.glas:write_glas_download",
                        options=("num_train", "num_val", "num_test", "size")),
    prepare_module="datasets.prepare.glas",
    raw=RawInput(normalize=normalize_image, resize=resize_image, resize_label=resize_label),
))

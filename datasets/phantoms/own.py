"""Tiny raw data sets in the formats users hold their own data in, the input of ``python -m datasets.prepare.own``:
nnU-Net v2 raw (CT volumes, some cases stored RAS, some LPS, at two in-plane spacings, with a labelled imagesTs),
Medical Segmentation Decathlon (2-channel MRI as 4-D NIfTI), and a plain 2-D folder (RGB PNGs with 0/255 masks).

Volumes are drawn from one continuous scene in world millimetres, sampled on each case's own grid (its affine), so
the storage (orientation, spacing) changes the voxels and not the anatomy. Every case comes from
``np.random.default_rng([seed, case])``: same seed -> identical files.

    python -m datasets.phantoms --format nnunet --out data/raw   # data/raw/Dataset901_Phantom
"""
from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np

from ..io.atomic import atomic_path, atomic_write_text
from ..io.images import save_image_file
from .shapes import check_counts

__all__ = ["RAW_FORMATS", "RAW_FORMAT_OPTIONS", "write_nnunet_phantom",
           "write_msd_phantom", "write_folder_phantom", "write_raw_phantom"]

NNUNET_DIR, MSD_DIR, FOLDER_DIR = "Dataset901_Phantom", "Task901_Phantom", "Folder_Phantom"
CLASS_NAMES = ("organ", "lesion")
VOLUME_SHAPE = (40, 40, 6)  # voxels (x, y, z) at the finer spacing
IN_PLANE_SPACINGS = (1.5, 1.8)  # mm, alternating over the cases
SLICE_SPACING = 4.0  # mm
CT_BODY, CT_ORGAN, CT_LESION, CT_AIR, CT_NOISE = 0.0, 60.0, 160.0, -1000.0, 12.0  # HU
IMAGE_SIZE = 48  # pixels of the 2-D folder's pictures


def _affine(spacing: float, lps: bool, shape: tuple[int, int, int]) -> np.ndarray:
    """A grid centred on the world (RAS) origin whose voxel axes point L, P, S (``lps``) or R, A, S."""
    sign = -1.0 if lps else 1.0  # RAS world: towards L and P are the negative x and y
    steps = np.array([sign * spacing, sign * spacing, SLICE_SPACING])
    affine = np.diag([*steps, 1.0])
    affine[:3, 3] = -steps * (np.array(shape) - 1) / 2
    return affine


def _scene(affine: np.ndarray, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Labels (0 body/air, 1 organ, 2 lesion) of the case's grid, from world-space ellipsoids."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    world = index @ affine[:3, :3].T + affine[:3, 3]
    shift = rng.uniform(-3, 3, size=3) * (1, 1, 0)
    organ = (((world - (6, -4, 0) - shift) / (16, 11, 14)) ** 2).sum(-1) <= 1
    lesion = (((world - (12, -2, 0) - shift) / (5, 5, 9)) ** 2).sum(-1) <= 1
    label = organ.astype(np.uint8)
    label[lesion] = 2
    return label


def _save_nifti(path: str, data: np.ndarray, affine: np.ndarray) -> None:
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(image, tmp + ".nii.gz")
        os.replace(tmp + ".nii.gz", tmp)


def _volume_case(seed: int, case: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.random.Generator]:
    """(labels, affine, body mask, rng) of one case: spacing and orientation alternate with the case number."""
    rng = np.random.default_rng([seed, case])
    spacing = IN_PLANE_SPACINGS[case % 2]
    shape = tuple(int(round(n * IN_PLANE_SPACINGS[0] / spacing)) for n in VOLUME_SHAPE[:2]) + VOLUME_SHAPE[2:]
    affine = _affine(spacing, lps=(case // 2) % 2 == 0, shape=shape)
    label = _scene(affine, shape, rng)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    world = index @ affine[:3, :3].T + affine[:3, 3]
    body = ((world[..., :2] / (26, 22)) ** 2).sum(-1) <= 1
    return label, affine, body, rng


def _ct(label: np.ndarray, body: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    image = np.where(body, CT_BODY, CT_AIR) + np.choose(label, [0.0, CT_ORGAN - CT_BODY, CT_LESION - CT_BODY])
    return (image + rng.normal(0, CT_NOISE, label.shape)).astype(np.int16)


def write_nnunet_phantom(out: str, seed: int = 0, num_train: int = 6, num_test: int = 2) -> str:
    """An nnU-Net v2 raw CT set under ``out/Dataset901_Phantom``; returns its folder."""
    check_counts(num_train=num_train, num_test=num_test)
    root = os.path.join(out, NNUNET_DIR)
    for case in range(num_train + num_test):
        subset = "Tr" if case < num_train else "Ts"
        label, affine, body, rng = _volume_case(seed, case)
        name = f"phantom_{case:03d}"
        _save_nifti(os.path.join(root, f"images{subset}", f"{name}_0000.nii.gz"), _ct(label, body, rng), affine)
        _save_nifti(os.path.join(root, f"labels{subset}", f"{name}.nii.gz"), label, affine)
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, **{n: i + 1 for i, n in enumerate(CLASS_NAMES)}},
            "numTraining": num_train, "file_ending": ".nii.gz", "name": "Phantom"}
    atomic_write_text(os.path.join(root, "dataset.json"), json.dumps(meta, indent=1))
    return root


def write_msd_phantom(out: str, seed: int = 0, num_train: int = 6) -> str:
    """A Decathlon-style set of 2-channel (T1, T2) MRI, one 4-D NIfTI per case, under ``out/Task901_Phantom``."""
    check_counts(num_train=num_train)
    root = os.path.join(out, MSD_DIR)
    training = []
    for case in range(num_train):
        label, affine, body, rng = _volume_case(seed, case)
        t1 = np.where(body, 300.0, 0.0) + np.choose(label, [0.0, 200.0, -150.0])
        t2 = np.where(body, 500.0, 0.0) + np.choose(label, [0.0, -100.0, 400.0])
        image = np.stack([t1, t2], axis=-1) + rng.normal(0, 20, (*label.shape, 2))
        name = f"phantom_{case:03d}.nii.gz"
        _save_nifti(os.path.join(root, "imagesTr", name), image.astype(np.float32), affine)
        _save_nifti(os.path.join(root, "labelsTr", name), label, affine)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "Phantom", "modality": {"0": "T1", "1": "T2"},
            "labels": {"0": "background", **{str(i + 1): n for i, n in enumerate(CLASS_NAMES)}},
            "numTraining": num_train, "training": training, "test": []}
    atomic_write_text(os.path.join(root, "dataset.json"), json.dumps(meta, indent=1))
    return root


def write_folder_phantom(out: str, seed: int = 0, num_train: int = 10, size: int = IMAGE_SIZE) -> str:
    """A folder of RGB PNG pictures and 0/255 PNG masks (one bright blob each) under ``out/Folder_Phantom``."""
    check_counts(num_train=num_train, size=size)
    root = os.path.join(out, FOLDER_DIR)
    yy, xx = np.mgrid[:size, :size] / size
    for case in range(num_train):
        rng = np.random.default_rng([seed, case])
        cy, cx, radius = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.12, 0.22)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2) <= radius ** 2
        image = np.stack([np.where(mask, 200.0, 70.0), np.where(mask, 90.0, 120.0), np.full(mask.shape, 100.0)], -1)
        image = np.clip(image + rng.normal(0, 15, image.shape), 0, 255).astype(np.uint8)
        save_image_file(os.path.join(root, "images", f"img_{case:03d}.png"), image)
        save_image_file(os.path.join(root, "masks", f"img_{case:03d}.png"), (mask * 255).astype(np.uint8))
    return root


RAW_FORMATS = {"nnunet": write_nnunet_phantom, "msd": write_msd_phantom, "folder": write_folder_phantom}
RAW_FORMAT_OPTIONS = {"nnunet": ("num_train", "num_test"), "msd": ("num_train",), "folder": ("num_train", "size")}


def write_raw_phantom(raw_format: str, out: str, seed: int = 0, **counts: int) -> str:
    """Write the phantom of ``raw_format`` (nnunet, msd, folder) under ``out``; returns its folder."""
    return RAW_FORMATS[raw_format](out, seed=seed, **counts)

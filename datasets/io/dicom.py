"""Single DICOM files (``.dcm``) as users hold them: a slice, a multi-frame volume or cine, a colour ultrasound loop,
compressed or not. Read with pydicom; compressed pixel data is decoded by the plugins pydicom finds (Pillow,
pylibjpeg with its openjpeg / rle plugins, see requirements.txt, and libjpeg, GPL-3.0, requirements-gpl.txt).

Two views of a file, for the two kinds of data set:

* :func:`dicom_volume` (volume sets, grey models): the frames as one volume (x, y, z) with the affine of the DICOM
  geometry (ImagePositionPatient / ImageOrientationPatient / PixelSpacing, per frame from the enhanced multi-frame
  functional groups or the RT Dose GridFrameOffsetVector), the modality LUT (rescale slope / intercept: CT HU)
  applied, and colour turned into luma.
* :func:`dicom_picture` (image sets): one frame as a uint8 picture [H, W, C] as a viewer shows it: colour as RGB
  (YBR converted, palette looked up, deeper samples scaled to 8 bits), grey through its window (VOI) to 8 bits.

Every problem is a :class:`~datasets.errors.DataError` naming the file; what was assumed or converted comes back as
notes (one line each) for the caller to print. Imports neither ``utils`` nor ``networks``.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, first_line
from .volumes import LPS_TO_RAS, RawVolume, checked_volume

__all__ = ["DICOM_SUFFIXES", "LUMA_WEIGHTS", "has_dicom_prefix", "read_dataset", "frame_count", "check_pixels",
           "probe_frames", "decode_frames", "dicom_affine", "dicom_volume", "read_dicom_file", "dicom_picture", "luma"]

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")  # .ima: Siemens' exports
DICOM_PREFIX_OFFSET, DICOM_PREFIX = 128, b"DICM"  # after the 128-byte preamble of a DICOM file (PS3.10 7.1)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L") and utils.model_input
COLOUR_INTERPRETATIONS = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "PALETTE COLOR")
GREY_INTERPRETATIONS = ("MONOCHROME1", "MONOCHROME2")
POSITION_TOLERANCE_MM = 1e-3  # frames closer than this along the slice normal share one position
SPACING_TOLERANCE = 1e-2  # relative spread of the slice gaps above which the spacing is noted as uneven


# ----------------------------------------------------------------------------------------------------------------
# Reading and decoding
# ----------------------------------------------------------------------------------------------------------------
def has_dicom_prefix(path: str | os.PathLike) -> bool:
    """True when the file holds the 'DICM' prefix after the preamble (a DICOM file whatever its name)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(DICOM_PREFIX_OFFSET)
            return handle.read(len(DICOM_PREFIX)) == DICOM_PREFIX
    except OSError:
        return False


def _transfer_syntax_from_encoding(ds) -> Any:
    """The transfer syntax of a file without file meta information, from the encoding pydicom found."""
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def read_dataset(path: str | os.PathLike, pixels: bool = True):
    """The pydicom dataset of a file (``pixels=False``: the pixel data left on disk, for a look at the header).

    Files without the 128-byte preamble and file meta information (older exports) are read too, their transfer
    syntax taken from the encoding found. DataError for a file that is not DICOM or cannot be parsed.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file does not exist")
    defer = None if pixels else 1024  # values over 1 KiB (the pixel data) are read only when used
    with warnings.catch_warnings():  # pydicom warns about every oddity of a real file; problems are raised below
        warnings.simplefilter("ignore")
        try:
            try:
                ds = pydicom.dcmread(path, defer_size=defer)
            except InvalidDicomError:
                ds = pydicom.dcmread(path, defer_size=defer, force=True)
                if "PixelData" not in ds and "Rows" not in ds and "SOPClassUID" not in ds:
                    raise DataError(path, "not a DICOM file (no 'DICM' prefix, and no DICOM image attributes)") \
                        from None
                ds.file_meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
            if "TransferSyntaxUID" not in ds.file_meta:
                ds.file_meta.TransferSyntaxUID = _transfer_syntax_from_encoding(ds)
            _check_complete(path, ds)
        except DataError:
            raise
        except Exception as exc:  # pydicom raises many types for corrupt files
            raise DataError(path, f"cannot read DICOM file (corrupt or truncated): {first_line(exc)}") from exc
    return ds


def _check_complete(path: Path, ds) -> None:
    """DataError for a truncated file: pydicom reads a value cut short by the end of the file without complaint, so
    each top-level value's end is checked against the file's size (values of undefined length, e.g. compressed
    pixel data, are checked by their decoder; deflated files hold no file offsets)."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    if len(ds) == 0:
        raise DataError(path, "no data set after the file meta information (truncated, or not an image file)")
    if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return
    size = path.stat().st_size
    for tag in ds.keys():
        element = ds.get_item(tag)
        tell, length = getattr(element, "value_tell", None), getattr(element, "length", None)
        if tell is not None and length is not None and length != 0xFFFFFFFF and tell + length > size:
            from pydicom.datadict import keyword_for_tag

            raise DataError(path, f"truncated: the file ends {tell + length - size} bytes before the end of "
                                  f"{keyword_for_tag(tag) or 'element'} {tag}")


def _sop_class(ds) -> str:
    """The name of the file's SOP class (from the data set, else its file meta information), '' if unknown."""
    sop = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
    return (getattr(sop, "name", None) or str(sop)) if sop else ""


def _what(ds) -> str:
    """'a <SOP class> object (modality X)' for messages about files that are not images."""
    modality = ds.get("Modality")
    return f"a {_sop_class(ds) or 'DICOM'} object" + (f" (modality {modality})" if modality else "")


def check_pixels(path: str | os.PathLike, ds) -> None:
    """DataError unless ``ds`` has pixel data of a transfer syntax that an installed decoder can decode."""
    from pydicom.pixels import get_decoder

    if not any(keyword in ds for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if "Rows" in ds or "Image Storage" in _sop_class(ds):
            raise DataError(path, f"no pixel data although it is {_what(ds)}: the file ends before its pixels or "
                                  f"they cannot be parsed (truncated or corrupt?)")
        raise DataError(path, f"no pixel data: {_what(ds)}, not an image")
    syntax = ds.file_meta.TransferSyntaxUID
    label = f"transfer syntax {getattr(syntax, 'name', '') or 'unknown'} ({syntax})"
    if not syntax.is_compressed:
        return
    try:
        decoder = get_decoder(syntax)
    except (NotImplementedError, ValueError):
        raise DataError(path, f"{label}: no decoder for it in pydicom; convert the file to an uncompressed or a "
                              f"JPEG / JPEG-LS / JPEG 2000 / RLE syntax (e.g. dcmdjpeg, gdcmconv --raw)") from None
    if not decoder.is_available:
        tried = "; ".join(decoder.missing_dependencies)
        raise DataError(path, f"{label}: no installed decoder can decode it (install pylibjpeg and its plugins: "
                              f"requirements.txt, and for JPEG-LS / JPEG lossless requirements-gpl.txt"
                              f"{'; unavailable: ' + tried if tried else ''})")


def frame_count(ds) -> int:
    """Number of frames (1 for a single-frame image)."""
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def decode_frames(path: str | os.PathLike, ds, index: int | None = None) -> np.ndarray:
    """The decoded pixels: all frames [F, H, W(, S)] (``index`` None) or one frame [H, W(, S)]; YBR converted to
    RGB by pydicom, the stored values otherwise. DataError for undecodable or truncated pixel data."""
    from pydicom.pixels import pixel_array

    check_pixels(path, ds)
    frames = frame_count(ds)
    if index is not None and not 0 <= index < frames:
        raise DataError(path, f"frame {index + 1} asked for, the file has {frames}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            array = pixel_array(ds, index=index if frames > 1 else None)
        except Exception as exc:  # decoders raise many types for corrupt data
            which = f"frame {index + 1} of {frames}: " if index is not None and frames > 1 else ""
            raise DataError(path, f"cannot decode the pixel data ({which}transfer syntax "
                                  f"{ds.file_meta.TransferSyntaxUID.name}; corrupt or truncated?): "
                                  f"{first_line(exc)}") from exc
    array = np.asarray(array)
    if index is None and frames == 1:
        array = array[None]
    if array.size == 0:
        raise DataError(path, f"empty image {array.shape}")
    return array


def _photometric(path, ds) -> str:
    interpretation = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if interpretation not in COLOUR_INTERPRETATIONS + GREY_INTERPRETATIONS:
        raise DataError(path, f"photometric interpretation {interpretation} is not supported (grey MONOCHROME1/2, "
                              f"RGB, YBR_FULL(_422), YBR_RCT/ICT, PALETTE COLOR)")
    return interpretation


def _colour_to_rgb(path, ds, pixels: np.ndarray, interpretation: str) -> tuple[np.ndarray, int]:
    """Colour pixels [..., 3] (palette looked up) and their bit depth."""
    if interpretation == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            rgb = apply_color_lut(pixels, ds)
        except Exception as exc:  # missing or malformed lookup tables
            raise DataError(path, f"cannot apply the palette colour lookup table: {first_line(exc)}") from exc
        return rgb, int(ds.RedPaletteColorLookupTableDescriptor[2])
    if pixels.shape[-1] != 3:
        raise DataError(path, f"{interpretation} image with {pixels.shape[-1]} samples per pixel, expected 3")
    return pixels, int(ds.get("BitsStored") or pixels.dtype.itemsize * 8)


def to_uint8(values: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned samples of ``bits`` bits scaled to 0..255 (8-bit samples unchanged)."""
    if values.dtype == np.uint8 or bits <= 8:
        return np.clip(values, 0, 255).astype(np.uint8)
    top = float(2 ** bits - 1)
    return np.rint(np.clip(values.astype(np.float64), 0, top) * (255.0 / top)).astype(np.uint8)


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of [..., 3] colour, float32 on the samples' scale."""
    return np.tensordot(rgb.astype(np.float32), np.asarray(LUMA_WEIGHTS, dtype=np.float32), axes=([-1], [0]))


# ----------------------------------------------------------------------------------------------------------------
# Attributes, top level or in the enhanced multi-frame functional groups
# ----------------------------------------------------------------------------------------------------------------
def _group_value(ds, frame: int, sequence: str, keyword: str) -> Any:
    """``keyword`` in the functional group ``sequence`` of ``frame`` (per-frame first, then shared), or None."""
    for groups, per_frame in ((ds.get("PerFrameFunctionalGroupsSequence"), True),
                              (ds.get("SharedFunctionalGroupsSequence"), False)):
        if not groups:
            continue
        item = groups[frame] if per_frame and frame < len(groups) else groups[0]
        inner = item.get(sequence)
        if inner and keyword in inner[0]:
            return inner[0].get(keyword)
    return None


def _attribute(ds, frame: int, sequence: str, keyword: str) -> Any:
    value = _group_value(ds, frame, sequence, keyword)
    return ds.get(keyword) if value is None else value


def _floats(value: Any, count: int) -> np.ndarray | None:
    """``count`` finite floats from a DICOM value, or None when absent or malformed."""
    if value is None:
        return None
    try:
        numbers = np.array([float(v) for v in (value if count > 1 else [value])], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return numbers if numbers.size == count and np.isfinite(numbers).all() else None


def _rescale(ds, frame: int) -> tuple[float, float] | None:
    """(slope, intercept) of a frame's modality rescale, None when there is none."""
    slope = _floats(_attribute(ds, frame, "PixelValueTransformationSequence", "RescaleSlope"), 1)
    intercept = _floats(_attribute(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept"), 1)
    if slope is None and intercept is None:
        return None
    return float(slope[0]) if slope is not None else 1.0, float(intercept[0]) if intercept is not None else 0.0


def _modality(path, ds, frames: np.ndarray, first: int = 0) -> tuple[np.ndarray, list[str]]:
    """Stored values -> the modality's values (CT: HU): the Modality LUT Sequence, or the rescale slope and
    intercept of each frame (top level or the frame's functional group). Frames ``first``, ``first + 1``, ..."""
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        return apply_modality_lut(frames, ds).astype(np.float32), ["modality LUT (Modality LUT Sequence) applied"]
    rescales = [_rescale(ds, first + index) for index in range(len(frames))]
    if all(rescale is None or rescale == (1.0, 0.0) for rescale in rescales):
        return frames, []
    out = np.empty(frames.shape, dtype=np.float32)
    for index, rescale in enumerate(rescales):
        slope, intercept = rescale or (1.0, 0.0)
        out[index] = frames[index].astype(np.float64) * slope + intercept
    shown = sorted({rescale for rescale in rescales if rescale is not None})
    described = ", ".join(f"slope {s:g} intercept {i:g}" for s, i in shown[:2]) + (" ..." if len(shown) > 2 else "")
    return out, [f"rescale applied ({described})"]


# ----------------------------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------------------------


def _frame_positions(ds, frames: int, normal: np.ndarray) -> np.ndarray | None:
    """ImagePositionPatient of every frame [F, 3] (functional groups, or the RT Dose GridFrameOffsetVector along
    the normal), None when only the first (or none) is known."""
    per_frame = [_floats(_group_value(ds, index, "PlanePositionSequence", "ImagePositionPatient"), 3)
                 for index in range(frames)]
    if all(position is not None for position in per_frame):
        return np.stack(per_frame)
    origin = _floats(ds.get("ImagePositionPatient"), 3)
    offsets = _floats(ds.get("GridFrameOffsetVector"), frames) if frames > 1 else None
    if origin is not None and offsets is not None:
        if offsets[0] != 0:  # PS3.3 C.8.8.3.2: absolute z coordinates when the first offset is not 0
            offsets = offsets - origin @ normal
        return origin + offsets[:, None] * normal
    if frames == 1 and origin is not None:
        return origin[None]
    return None


def dicom_affine(path: str | os.PathLike, ds, frames: int) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """(RAS affine of voxels (column, row, frame), the frame order that makes the third axis run along the slice
    normal (None: as stored), notes).

    Positions along the normal give the slice step; frames in no monotonic order are sorted (as a series is). All
    frames at one position (a cine) are stacked in stored order with the slice thickness as step, noted. Frames at
    several positions some of which repeat (stacks over time) are a 4-D file: DataError. Missing geometry is
    noted and assumed: DICOM's default axial orientation (voxel axes L, P, S, i.e. kept as stored), origin 0,
    spacing from PixelSpacing or 1 mm.
    """
    notes: list[str] = []
    orientation = _floats(_attribute(ds, 0, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
    if orientation is not None:
        row, column = orientation[:3], orientation[3:]
        lengths = np.linalg.norm(row), np.linalg.norm(column)
        if min(lengths) < 1e-6 or abs(float(row @ column) / (lengths[0] * lengths[1])) > 1e-3:
            notes.append(f"ImageOrientationPatient {orientation.tolist()} is not two orthogonal directions: ignored")
            orientation = None
        else:
            row, column = row / lengths[0], column / lengths[1]
    if orientation is None:
        row, column = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    if frames > 1 and ds.get("PerFrameFunctionalGroupsSequence"):
        others = {tuple(np.round(value, 4)) for index in range(frames) if (value := _floats(
            _group_value(ds, index, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)) is not None}
        if len(others) > 1:
            raise DataError(path, f"frames of {len(others)} different orientations: the model takes one volume of "
                                  f"parallel slices")
    normal = np.cross(row, column)
    spacing = _floats(_attribute(ds, 0, "PixelMeasuresSequence", "PixelSpacing"), 2)  # (between rows, columns)
    thickness = next((float(value[0]) for keyword in ("SpacingBetweenSlices", "SliceThickness")
                      if (value := _floats(_attribute(ds, 0, "PixelMeasuresSequence", keyword), 1)) is not None
                      and value[0] > 0), None)
    positions = _frame_positions(ds, frames, normal)
    missing = [name for name, value in (("ImageOrientationPatient", orientation), ("ImagePositionPatient",
                                                                                   positions)) if value is None]
    if spacing is None or (spacing <= 0).any():
        spacing = np.ones(2)
        missing.append("PixelSpacing")
    if missing:
        notes.append(f"no {' / '.join(missing)}: assumed "
                     + ", ".join(part for part, absent in (
                         ("voxel axes as stored (DICOM's default axial orientation: L, P, S)",
                          "ImageOrientationPatient" in missing),
                         ("origin 0", "ImagePositionPatient" in missing), ("1 mm pixels", "PixelSpacing" in missing))
                         if absent) + "; the label map lines up with the input voxel for voxel, its world position "
                                      "and volume_ml are only as good as these")
    order = None
    step = thickness if thickness is not None else 1.0
    if positions is not None and frames > 1:
        along = positions @ normal
        ranked = np.sort(along)
        distinct = 1 + int(np.count_nonzero(np.diff(ranked) > POSITION_TOLERANCE_MM))
        if distinct == 1:
            notes.append(f"{frames} frames at one position (a cine or time series): stacked along the third axis in "
                         f"stored order, {step:g} mm apart (the slice thickness; volume_ml adds up the frames)")
        elif distinct < frames:
            raise DataError(path, f"{frames} frames at {distinct} positions (stacks over time or several stacks): a "
                                  f"4-D multi-frame file; the model segments one 3-D volume per file (split it, e.g. "
                                  f"into one file per time point)")
        else:
            gaps = np.diff(along)
            if not ((gaps > 0).all() or (gaps < 0).all()):
                order = np.argsort(along, kind="stable")
                notes.append("frames are not in slice order: sorted by position along the slice normal")
                gaps = np.diff(along[order])
            step = float(gaps.mean())
            if np.ptp(gaps) > SPACING_TOLERANCE * abs(step):
                notes.append(f"uneven slice spacing ({abs(gaps).min():g} to {abs(gaps).max():g} mm): the affine "
                             f"uses the mean, {abs(step):g} mm")
    elif frames > 1 and thickness is None:
        notes.append("no slice positions and no slice spacing: frames 1 mm apart")
    elif frames > 1:
        notes.append(f"no per-frame positions: frames {step:g} mm apart along the slice normal (SpacingBetweenSlices / "
                     f"SliceThickness)")
    origin = np.zeros(3) if positions is None else positions[order[0] if order is not None else 0]
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * spacing[1], column * spacing[0], normal * step, origin
    return LPS_TO_RAS @ lps, order, notes


# ----------------------------------------------------------------------------------------------------------------
# The two views
# ----------------------------------------------------------------------------------------------------------------
def dicom_volume(path: str | os.PathLike) -> RawVolume:
    """A DICOM file as a grey volume (x, y, z) for a volume model, with its affine (see :func:`dicom_affine`).

    Grey: the modality's values (rescale / Modality LUT applied: CT in HU); the window (VOI) is for display and is
    not applied, nor is MONOCHROME1 inverted (both leave the physical values the preparation normalises). Colour:
    BT.601 luma of the RGB samples (noted: display values, not the modality's units).
    """
    path = Path(path)
    ds = read_dataset(path)
    interpretation = _photometric(path, ds)
    pixels = decode_frames(path, ds)
    frames, notes = len(pixels), []
    if interpretation in COLOUR_INTERPRETATIONS:
        rgb, _ = _colour_to_rgb(path, ds, pixels, interpretation)
        pixels = luma(rgb)
        notes.append(f"colour ({interpretation}) converted to grey (BT.601 luma) for the grey model: its values are "
                     f"display intensities, not the modality's units (e.g. not CT HU)")
    elif pixels.ndim != 3:
        raise DataError(path, f"grey image with pixel array {pixels.shape}, expected [frames, rows, columns]")
    else:
        pixels, rescale_notes = _modality(path, ds, pixels)
        notes += rescale_notes
    if not np.issubdtype(pixels.dtype, np.number) or not np.isfinite(pixels).all():
        raise DataError(path, "pixel data holds non-finite values")
    affine, order, geometry_notes = dicom_affine(path, ds, frames)
    notes += geometry_notes
    if order is not None:
        pixels = pixels[order]
    if frames == 1:
        notes.append("one frame: segmented as a volume of one slice (a whole scan is given as the folder of its "
                     "series)")
    return RawVolume(np.ascontiguousarray(np.transpose(pixels, (2, 1, 0))), affine, notes=notes)


def read_dicom_file(path: str | os.PathLike) -> RawVolume:
    """One DICOM file as a checked grey volume for prediction (:func:`dicom_volume`: a single frame is a volume of
    one slice, a multi-frame file the volume of its frames; the affine from its geometry, assumptions noted)."""
    volume = dicom_volume(path)
    volume.data = checked_volume(path, volume.data, "DICOM image")
    return volume


def _first_number(value: Any) -> float | None:
    """The first of a DICOM number value (VM 1 or more: a file may offer several windows), None if absent."""
    if value is None:
        return None
    try:
        number = float(value[0] if hasattr(value, "__len__") and not isinstance(value, str) else value)
    except (TypeError, ValueError, IndexError):
        return None
    return number if np.isfinite(number) else None


def _window(ds, frame: int) -> tuple[float, float, str] | None:
    """(center, width, VOI LUT function) of a frame's first window (the one viewers show), None without one."""
    center, width = (_first_number(_attribute(ds, frame, "FrameVOILUTSequence", keyword))
                     for keyword in ("WindowCenter", "WindowWidth"))
    if center is None or width is None or width <= 0:
        return None
    function = str(_attribute(ds, frame, "FrameVOILUTSequence", "VOILUTFunction") or "LINEAR").strip().upper()
    return center, width, function


def _grey_to_uint8(values: np.ndarray, ds, frame: int, notes: list[str]) -> np.ndarray:
    """Grey modality values -> 0..255 as a viewer shows them: the file's first window (VOI, PS3.3 C.11.2.1.2:
    LINEAR, LINEAR_EXACT, SIGMOID), else 8-bit samples as stored, else the image's own range; MONOCHROME1 inverted."""
    window = _window(ds, frame)
    values = values.astype(np.float64)
    if window is not None:
        center, width, function = window
        if function == "SIGMOID":
            shown = 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
        else:
            if function != "LINEAR_EXACT":
                center, width = center - 0.5, max(width - 1.0, 1e-6)
            shown = np.clip(((values - center) / width + 0.5) * 255.0, 0.0, 255.0)
        notes.append(f"grey shown through its window (center {window[0]:g}, width {window[1]:g}, {function})")
    elif int(ds.get("BitsStored") or 16) <= 8 and values.min() >= 0 and values.max() <= 255:
        shown = values
    else:
        low, high = float(values.min()), float(values.max())
        shown = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        notes.append("grey without a window (VOI): its own range scaled to 0..255")
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        shown = 255.0 - shown
        notes.append("MONOCHROME1 inverted (white is low)")
    return np.rint(np.clip(shown, 0, 255)).astype(np.uint8)


def dicom_picture(path: str | os.PathLike, channels: int = 3, frame: int | None = None
                  ) -> tuple[np.ndarray, list[str]]:
    """One frame of a DICOM file (``frame`` 0-based; None for a single-frame file) as uint8 [H, W, channels] for an
    image model, and notes.

    Colour: RGB (YBR converted by pydicom, palette looked up, samples of more than 8 bits scaled to 8);
    ``channels`` 1 takes its luma. Grey: through its window to 8 bits (:func:`_grey_to_uint8`), the modality LUT
    first; ``channels`` 3 repeats it in R, G and B (noted), as the preparations' ``convert("RGB")`` does with grey
    images.
    """
    path = Path(path)
    ds = read_dataset(path)
    interpretation = _photometric(path, ds)
    check_pixels(path, ds)  # before the frame: a file that cannot be decoded is reported as such
    frames = frame_count(ds)
    if frame is None and frames > 1:
        raise DataError(path, f"{frames} frames: name the frame (each frame is one image input)")
    pixels = decode_frames(path, ds, frame if frames > 1 else None)
    if frames == 1:
        pixels = pixels[0]
    notes: list[str] = []
    if interpretation in COLOUR_INTERPRETATIONS:
        rgb, bits = _colour_to_rgb(path, ds, pixels, interpretation)
        if interpretation != "RGB":
            notes.append(f"{interpretation} converted to RGB")
        if bits > 8:
            notes.append(f"{bits}-bit colour samples scaled to 8 bits")
        picture = to_uint8(rgb, bits)
        if channels == 1:
            picture = np.rint(luma(picture)).astype(np.uint8)[..., None]
            notes.append("colour converted to grey (BT.601 luma) for the grey model")
    else:
        if pixels.ndim != 2:
            raise DataError(path, f"grey image with pixel array {pixels.shape}, expected [rows, columns]")
        values, rescale_notes = _modality(path, ds, pixels[None], first=frame or 0)
        notes += rescale_notes
        picture = _grey_to_uint8(values[0], ds, frame or 0, notes)[..., None]
        if channels == 3:
            picture = np.repeat(picture, 3, axis=-1)
            notes.append("grey image repeated in R, G and B for the colour model")
    if picture.shape[-1] != channels:
        raise DataError(path, f"wrong channel count: {picture.shape[-1]} channels, the model takes {channels}")
    return np.ascontiguousarray(picture), notes


def probe_frames(path: str | os.PathLike) -> int:
    """The number of frames of a DICOM file, from its header (pixels left on disk); DataError when it has no
    decodable pixel data or is truncated, so that a caller can report it once rather than once per frame."""
    ds = read_dataset(path, pixels=False)
    check_pixels(path, ds)
    return frame_count(ds)

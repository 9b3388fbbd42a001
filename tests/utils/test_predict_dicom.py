"""Single DICOM files (datasets/dicom.py, predict.py): real files that pydicom ships in its wheel (CT, MR, RT Dose,
Segmentation, ultrasound, secondary captures; uncompressed, RLE, JPEG baseline / lossless, JPEG-LS, JPEG 2000,
deflate), each checked against an independent statement: the pixels pydicom decodes itself, the uncompressed twin
of a compressed file, affines written out by hand from the files' attributes, and for predict.py the labels that the
same model gives on the same pixels reached another way (a PNG export, a hand-built volume).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from scipy import ndimage
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset
from pydicom.pixels import apply_color_lut, apply_windowing, get_decoder, pixel_array
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import JPEGLSLossless, MPEG2MPML, RLELossless

from datasets import get_dataset
from datasets.acdc import minmax_normalize
from datasets.errors import DataError
from datasets.io.dicom import dicom_picture, dicom_volume, probe_frames, read_dataset
from datasets.synapse import clip_and_scale_hu
from tests.utils.test_predict import error_lines, read_csv, run_predict, save_model, tiny_model
from utils.inference import predict_volume
from utils.predict import find_inputs

pytestmark = pytest.mark.usefixtures("single_thread")

LUMA = np.array([0.299, 0.587, 0.114])


def real(name: str, decodable: bool = True) -> Path:
    """A test file inside the pydicom wheel (no download). ``decodable``: skip the test where no installed plugin
    decodes its transfer syntax: JPEG-LS, JPEG lossless and 12-bit JPEG need pylibjpeg-libjpeg, a GPL-3.0 package
    that requirements.txt leaves to requirements-gpl.txt (README, licence)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not in the installed pydicom"
    if decodable and not libjpeg_decodes(path):
        pytest.skip(f"{name}: no installed decoder for its transfer syntax (pip install -r requirements-gpl.txt adds "
                    f"pylibjpeg-libjpeg, GPL-3.0)")
    return Path(path)


def libjpeg_decodes(path: str) -> bool:
    """False for a file that only pylibjpeg's plugins could decode and they are not installed."""
    ds = pydicom.dcmread(path)
    if not ds.file_meta.TransferSyntaxUID.is_compressed:  # decoded by pydicom itself (a failure is the test's)
        return True
    try:
        if "pylibjpeg" in get_decoder(ds.file_meta.TransferSyntaxUID).available_plugins:
            return True
    except NotImplementedError:  # a syntax pydicom has no decoder for: the test itself is about that
        return True
    try:
        pixel_array(ds)
    except (RuntimeError, NotImplementedError, ValueError):
        return False
    return True


def stored(name: str) -> np.ndarray:
    """The pixels as pydicom itself decodes them (YBR converted to RGB)."""
    return pixel_array(pydicom.dcmread(real(name)))


def copy_to(folder: Path, name: str, as_name: str | None = None, decodable: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(real(name, decodable), folder / (as_name or name)))


def ras(lps_columns: list[list[float]], origin: list[float]) -> np.ndarray:
    """A RAS affine from LPS voxel steps (one per voxel axis) and the LPS origin, both written out by hand."""
    affine = np.eye(4)
    affine[:3, :3] = np.array(lps_columns, dtype=np.float64).T
    affine[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


# ----------------------------------------------------------------------------------------------------------------
# Reader: grey volumes, rescale and geometry
# ----------------------------------------------------------------------------------------------------------------
def test_ct_slice_is_in_hounsfield_units_with_the_affine_of_its_attributes():
    volume = dicom_volume(real("CT_small.dcm"))
    ds = pydicom.dcmread(real("CT_small.dcm"))
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
    hu = ds.pixel_array.astype(np.float64) - 1024.0  # [row, column]
    assert volume.data.shape == (128, 128, 1)
    np.testing.assert_array_equal(volume.data[:, :, 0], hu.T)  # x = column, y = row
    # ImagePositionPatient -158.135803\-179.035797\-75.699997, orientation 1\0\0\0\1\0, PixelSpacing 0.661468,
    # SpacingBetweenSlices 5
    expected = ras([[0.661468, 0, 0], [0, 0.661468, 0], [0, 0, 5.0]], [-158.135803, -179.035797, -75.699997])
    np.testing.assert_allclose(volume.affine, expected, atol=1e-6)
    assert any("rescale applied (slope 1 intercept -1024)" in note for note in volume.notes)
    assert any("one frame" in note for note in volume.notes)


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
                                  "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_expb.dcm"])
def test_lossless_and_other_encodings_of_mr_small_equal_the_uncompressed_file(name):
    reference = dicom_volume(real("MR_small.dcm"))
    np.testing.assert_array_equal(reference.data[:, :, 0], stored("MR_small.dcm").T)  # no rescale in MR_small
    volume = dicom_volume(real(name))
    np.testing.assert_array_equal(volume.data, reference.data)
    # 64x64, 0.3125 mm pixels, SliceThickness 0.8 (no SpacingBetweenSlices), at -83.9063\-91.2000\6.6406
    np.testing.assert_allclose(volume.affine, ras([[0.3125, 0, 0], [0, 0.3125, 0], [0, 0, 0.8]],
                                                  [-83.9063, -91.2, 6.6406]), atol=1e-6)


@pytest.mark.parametrize("name", ["image_dfl.dcm", "JPEG2000.dcm", "JPGExtended.dcm", "693_J2KI.dcm"])
def test_deflated_jpeg_and_jpeg_2000_files_decode_as_pydicom_decodes_them(name):
    ds = pydicom.dcmread(real(name))
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    np.testing.assert_array_equal(dicom_volume(real(name)).data[:, :, 0].T,
                                  stored(name).astype(np.float64) * slope + intercept)


def test_multi_frame_rt_dose_is_a_volume_with_the_grid_frame_offsets():
    volume = dicom_volume(real("rtdose.dcm"))
    np.testing.assert_array_equal(volume.data, stored("rtdose.dcm").transpose(2, 1, 0))
    assert volume.data.shape == (10, 10, 15)
    # ImagePositionPatient 189.43125\199.43125\-761.87, axial, PixelSpacing 10\10, GridFrameOffsetVector 0\5\...\70
    np.testing.assert_allclose(volume.affine, ras([[10, 0, 0], [0, 10, 0], [0, 0, 5]], [189.43125, 199.43125, -761.87]),
                               atol=1e-6)
    assert volume.notes == []


def test_enhanced_functional_groups_give_the_geometry():
    volume = dicom_volume(real("liver_1frame.dcm"))  # a Segmentation with shared and per-frame functional groups
    # PlanePositionSequence -235.2\-226.8\-128.69, PixelMeasuresSequence PixelSpacing 0.810547, SpacingBetweenSlices 1
    np.testing.assert_allclose(volume.affine, ras([[0.810547, 0, 0], [0, 0.810547, 0], [0, 0, 1.0]],
                                                  [-235.2, -226.8, -128.69]), atol=1e-6)
    np.testing.assert_array_equal(volume.data[:, :, 0], stored("liver_1frame.dcm").T)


def enhanced_ct(path: Path, offsets: list[float], rescales: list[tuple[float, float]]) -> tuple[Path, np.ndarray]:
    """An enhanced CT multi-frame file built from CT_small's pixels: coronal frames (row direction 1\\0\\0, column
    direction 0\\0\\-1, so the normal is 0\\1\\0) at ``offsets`` mm along the normal from -100\\-20\\50, PixelSpacing
    0.5\\0.7, a rescale per frame in the per-frame functional groups. Returns the path and the stored frames."""
    ds = pydicom.dcmread(real("CT_small.dcm"))
    base = ds.pixel_array
    frames = np.stack([np.roll(base, 7 * index, axis=1) for index in range(len(offsets))]).astype(np.int16)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
                    "SpacingBetweenSlices", "RescaleSlope", "RescaleIntercept", "SliceLocation"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT
    ds.NumberOfFrames = len(offsets)

    def item(**sequences) -> Dataset:
        group = Dataset()
        for name, attributes in sequences.items():
            inner = Dataset()
            for keyword, value in attributes.items():
                setattr(inner, keyword, value)
            setattr(group, name, DicomSequence([inner]))
        return group

    ds.SharedFunctionalGroupsSequence = DicomSequence([item(
        PlaneOrientationSequence={"ImageOrientationPatient": [1, 0, 0, 0, 0, -1]},
        PixelMeasuresSequence={"PixelSpacing": [0.5, 0.7], "SliceThickness": 3})])
    ds.PerFrameFunctionalGroupsSequence = DicomSequence([item(
        PlanePositionSequence={"ImagePositionPatient": [-100.0, -20.0 + offset, 50.0]},
        PixelValueTransformationSequence={"RescaleSlope": slope, "RescaleIntercept": intercept})
        for offset, (slope, intercept) in zip(offsets, rescales)])
    ds.PixelData = frames.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path, frames


def test_enhanced_multi_frame_out_of_order_is_sorted_with_each_frames_rescale(tmp_path):
    rescales = [(1.0, -1024.0), (2.0, -1000.0), (1.0, 0.0), (1.0, 5.0)]
    path, frames = enhanced_ct(tmp_path / "enhanced.dcm", [6.0, 0.0, 3.0, 9.0], rescales)
    volume = dicom_volume(path)
    order = [1, 2, 0, 3]  # by position along the normal: 0, 3, 6, 9 mm
    for z, frame in enumerate(order):
        slope, intercept = rescales[frame]
        np.testing.assert_array_equal(volume.data[:, :, z], (frames[frame] * slope + intercept).T)
    # x: row direction * column spacing 0.7; y: column direction * row spacing 0.5; z: the normal * 3 mm
    np.testing.assert_allclose(volume.affine, ras([[0.7, 0, 0], [0, 0, -0.5], [0, 3.0, 0]], [-100.0, -20.0, 50.0]),
                               atol=1e-6)
    assert any("sorted by position" in note for note in volume.notes)


def test_cine_at_one_position_is_stacked_and_4d_frames_are_refused(tmp_path):
    path, frames = enhanced_ct(tmp_path / "cine.dcm", [0.0, 0.0, 0.0], [(1.0, 0.0)] * 3)
    volume = dicom_volume(path)
    np.testing.assert_array_equal(volume.data, frames.transpose(2, 1, 0))
    np.testing.assert_allclose(volume.affine[:3, 2], [0, -3.0, 0])  # LPS normal 0\1\0 * thickness 3, in RAS
    assert any("frames at one position" in note for note in volume.notes)
    path, _ = enhanced_ct(tmp_path / "fourd.dcm", [0.0, 0.0, 4.0, 4.0], [(1.0, 0.0)] * 4)
    with pytest.raises(DataError, match="4 frames at 2 positions.*4-D"):
        dicom_volume(path)


def test_colour_without_geometry_becomes_luma_with_notes():
    volume = dicom_volume(real("examples_rgb_color.dcm"))  # ultrasound RGB, no patient geometry, no PixelSpacing
    rgb = stored("examples_rgb_color.dcm").astype(np.float64)
    np.testing.assert_allclose(volume.data[:, :, 0], (rgb @ LUMA).T, atol=1e-3)
    np.testing.assert_allclose(volume.affine, np.diag([-1.0, -1.0, 1.0, 1.0]))
    assert any("converted to grey (BT.601 luma)" in note for note in volume.notes)
    assert any("no ImageOrientationPatient / ImagePositionPatient / PixelSpacing" in note for note in volume.notes)


# ----------------------------------------------------------------------------------------------------------------
# Reader: pictures for image models
# ----------------------------------------------------------------------------------------------------------------
LOSSLESS_RGB = ["SC_rgb_gdcm_KY.dcm", "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle_16bit.dcm", "SC_rgb_rle_32bit.dcm"]
LOSSY_RGB = ["SC_rgb_dcmtk_+eb+cr.dcm", "SC_rgb_dcmtk_+eb+cy+n1.dcm", "SC_rgb_dcmtk_+eb+cy+n2.dcm",
             "SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_rgb_dcmtk_+eb+cy+s2.dcm", "SC_rgb_dcmtk_+eb+cy+s4.dcm",
             "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_jpeg_lossy_gdcm.dcm", "SC_rgb_jls_lossy_line.dcm",
             "SC_rgb_jls_lossy_sample.dcm", "SC_ybr_full_422_uncompressed.dcm"]


@pytest.mark.parametrize("name", LOSSLESS_RGB + LOSSY_RGB)
def test_colour_encodings_of_sc_rgb_equal_its_rle_twin(name):
    reference = stored("SC_rgb_rle.dcm")  # RLE is lossless: the 8-bit RGB original, 100x100 colour bars
    assert reference.dtype == np.uint8 and reference.shape == (100, 100, 3)
    picture, notes = dicom_picture(real(name))
    assert picture.dtype == np.uint8 and picture.shape == reference.shape
    difference = np.abs(picture.astype(int) - reference)
    if name in LOSSLESS_RGB:  # the 16- and 32-bit twins hold value * 257 and value * 16843009: scaled back exactly
        assert difference.max() == 0
    else:  # lossy JPEG / JPEG-LS near-lossless: within 6 levels inside the bars (sub-sampled chroma blurs edges)
        window = (5, 5, 1)
        inside = ndimage.maximum_filter(reference, size=window) == ndimage.minimum_filter(reference, size=window)
        assert difference[inside.all(-1)].max() <= 6 and difference.mean() < 3.0
    if "YBR" in str(pydicom.dcmread(real(name), stop_before_pixels=True).PhotometricInterpretation):
        assert any("converted to RGB" in note for note in notes)


def test_multi_frame_colour_frames_and_palette():
    ybr = stored("examples_ybr_color.dcm")  # 30-frame ultrasound loop, JPEG baseline YBR_FULL_422
    assert probe_frames(real("examples_ybr_color.dcm")) == 30
    for frame in (0, 17, 29):
        picture, notes = dicom_picture(real("examples_ybr_color.dcm"), 3, frame)
        np.testing.assert_array_equal(picture, ybr[frame])
    with pytest.raises(DataError, match="30 frames: name the frame"):
        dicom_picture(real("examples_ybr_color.dcm"))
    frames = stored("SC_rgb_rle_2frame.dcm")
    np.testing.assert_array_equal(dicom_picture(real("SC_rgb_rle_2frame.dcm"), 3, 1)[0], frames[1])
    # PALETTE COLOR: pydicom's lookup gives 16-bit entries; 8 bits = entry / 257
    ds = pydicom.dcmread(real("examples_palette.dcm"))
    looked_up = apply_color_lut(ds.pixel_array, ds)
    picture, notes = dicom_picture(real("examples_palette.dcm"))
    np.testing.assert_array_equal(picture, np.rint(looked_up / 257.0).astype(np.uint8))
    assert "PALETTE COLOR converted to RGB" in notes


def test_grey_picture_is_shown_through_its_window_and_repeated_for_a_colour_model():
    ds = pydicom.dcmread(real("MR_small.dcm"))  # window 600 / 1600, signed 16 bits
    windowed = apply_windowing(ds.pixel_array, ds)  # pydicom's window: output range [-32768, 32767]
    expected = np.rint((windowed + 32768.0) * 255.0 / 65535.0).astype(np.uint8)
    picture, notes = dicom_picture(real("MR_small.dcm"), 3)
    assert picture.shape == (64, 64, 3)
    for channel in range(3):
        assert np.abs(picture[..., channel].astype(int) - expected).max() <= 1
    assert any("window (center 600, width 1600" in note for note in notes)
    assert any("repeated in R, G and B" in note for note in notes)
    grey, _ = dicom_picture(real("examples_rgb_color.dcm"), 1)  # a grey model of a colour set: luma
    np.testing.assert_allclose(grey[..., 0], stored("examples_rgb_color.dcm") @ LUMA, atol=0.51)


# ----------------------------------------------------------------------------------------------------------------
# Reader: bad files, one clear problem each
# ----------------------------------------------------------------------------------------------------------------
def jpeg_ls_unavailable(monkeypatch) -> None:
    """As if no JPEG-LS plugin were installed (pylibjpeg-libjpeg missing): the decoder has no available plugin."""
    monkeypatch.setattr(get_decoder(JPEGLSLossless), "_available", {})


def mpeg2_file(path: Path) -> Path:
    """MR_small relabelled with an MPEG-2 transfer syntax (its bytes encapsulated as one fragment), which pydicom
    has no decoder for."""
    ds = pydicom.dcmread(real("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([ds.PixelData])
    ds.save_as(path, enforce_file_format=False)
    return path


def test_bad_files_give_one_clear_problem(tmp_path, monkeypatch):
    raw = real("CT_small.dcm").read_bytes()
    (tmp_path / "half.dcm").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "garbage.dcm").write_bytes(b"this is not DICOM" * 40)
    cases = {real("MR_truncated.dcm"): "truncated: the file ends 62 bytes before the end of PixelData",
             tmp_path / "half.dcm": "truncated",
             real("rtplan.dcm"): "no pixel data: a RT Plan Storage object (modality RTPLAN), not an image",
             real("reportsi.dcm"): "no pixel data",
             tmp_path / "garbage.dcm": "not a DICOM file",
             mpeg2_file(tmp_path / "mpeg2.dcm"): "transfer syntax MPEG2 Main Profile / Main Level"}
    for path, problem in cases.items():
        for read in (dicom_volume, dicom_picture):
            with pytest.raises(DataError, match=None) as caught:
                read(path)
            assert problem in caught.value.problem and Path(caught.value.path) == path, (path, caught.value)
    jpeg_ls_unavailable(monkeypatch)
    with pytest.raises(DataError, match=r"transfer syntax JPEG-LS Lossless Image Compression \(1.2.840.10008.1.2.4.80"
                                        r"\): no installed decoder can decode it"):
        dicom_volume(real("MR_small_jpeg_ls_lossless.dcm", decodable=False))


def test_files_without_a_suffix_are_found_by_their_prefix_and_frames_become_inputs(tmp_path):
    copy_to(tmp_path, "CT_small.dcm", "IM000001")
    copy_to(tmp_path, "SC_rgb_rle_2frame.dcm", "two.dcm")
    (tmp_path / "README").write_text("not an image")
    items, notes = find_inputs(tmp_path, "image")
    assert [(item.name, item.format, item.frame) for item in items] == [
        ("IM000001", "dicom_file", None), ("two_frame001", "dicom_file", 0), ("two_frame002", "dicom_file", 1)]
    assert "README" in notes[0]
    items, _ = find_inputs(tmp_path / "IM000001", "volume")
    assert [(item.name, item.format) for item in items] == [("IM000001", "dicom_file")]
    assert [item.format for item in find_inputs(tmp_path, "volume")[0]] == ["dicom"]  # a folder of DICOM: a series
    assert read_dataset(tmp_path / "IM000001").Modality == "CT"


# ----------------------------------------------------------------------------------------------------------------
# predict.py end to end
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("dicom_models")
    grey = tiny_model(1, 9)
    isic = get_dataset("isic2018")
    colour = tiny_model(3, isic.num_classes, seed=2)
    return dict(grey=grey, synapse=save_model(grey, root / "synapse.pth", "synapse"),
                colour=colour, isic=save_model(colour, root / "isic.pth", "isic2018"))


def test_single_ct_file_predicts_the_hounsfield_slice_with_its_geometry(models, tmp_path, capsys):
    status, out, err = run_predict(capsys, "--checkpoint", models["synapse"], "--input", real("CT_small.dcm"),
                                   "--output", tmp_path)
    assert status == 0, err
    image = nib.load(tmp_path / "CT_small.nii.gz")
    hu = stored("CT_small.dcm").astype(np.float64) - 1024.0
    # axial, already LPS: the [D, H, W] = [z, x, y] slice is the HU slice transposed; windowed as prepare_synapse
    model = models["grey"]
    expected = predict_volume(model, clip_and_scale_hu(hu.T)[None], model.img_size)[0]
    assert len(np.unique(expected)) > 1, "a constant prediction would not test the voxel order"
    assert image.shape == (128, 128, 1)
    np.testing.assert_array_equal(np.asarray(image.dataobj)[:, :, 0], expected)
    np.testing.assert_allclose(image.affine, ras([[0.661468, 0, 0], [0, 0.661468, 0], [0, 0, 5.0]],
                                                 [-158.135803, -179.035797, -75.699997]), atol=1e-5)
    rows = read_csv(tmp_path / "volumes.csv")
    for index, row in enumerate(rows, start=1):
        voxels = int(np.count_nonzero(expected == index))
        assert int(row["voxels"]) == voxels
        assert float(row["volume_ml"]) == pytest.approx(voxels * 0.661468 ** 2 * 5.0 / 1000.0, rel=1e-4)
    assert f"note: {real('CT_small.dcm')}: rescale applied" in out and "one frame" in out


def test_multi_frame_files_are_volumes_colour_ones_luma_for_the_grey_model(models, tmp_path, capsys):
    model = models["grey"]
    # RT Dose: 15 frames; ACDC's preprocessing (min-max, stored voxel order)
    status, out, err = run_predict(capsys, "--checkpoint", models["synapse"], "--dataset", "acdc", "--input",
                                   real("rtdose.dcm"), "--output", tmp_path)
    assert status == 0, err
    image = nib.load(tmp_path / "rtdose.nii.gz")
    volume = minmax_normalize(stored("rtdose.dcm").transpose(2, 1, 0))  # (x, y, z)
    expected = predict_volume(model, volume.transpose(2, 0, 1), model.img_size).transpose(1, 2, 0)
    assert len(np.unique(expected)) > 1, "a constant prediction would not test the voxel order"
    np.testing.assert_array_equal(np.asarray(image.dataobj), expected)
    np.testing.assert_allclose(image.affine, ras([[10, 0, 0], [0, 10, 0], [0, 0, 5]], [189.43125, 199.43125, -761.87]),
                               atol=1e-5)
    # a 30-frame colour ultrasound loop: luma of pydicom's RGB, a note, frames stacked along z
    status, out, err = run_predict(capsys, "--checkpoint", models["synapse"], "--dataset", "acdc", "--input",
                                   real("examples_ybr_color.dcm"), "--output", tmp_path)
    assert status == 0, err
    # The reader's luma (float32, x = column, y = row, z = frame) checked against pydicom's RGB @ BT.601 weights;
    # the prediction is then checked on exactly that input, so a float32-vs-float64 rounding of the luma cannot
    # flip voxels at a decision boundary (it did, on 20 of 2.3 M voxels, on one machine and not another).
    reader_luma = dicom_volume(real("examples_ybr_color.dcm")).data
    rgb = stored("examples_ybr_color.dcm").astype(np.float64)  # [frame, row, column, 3]
    np.testing.assert_allclose(reader_luma, (rgb @ LUMA).transpose(2, 1, 0), atol=1e-3)
    luma = reader_luma.transpose(2, 1, 0)  # [frame, row, column]
    expected = predict_volume(model, minmax_normalize(luma).transpose(0, 2, 1),
                              model.img_size).transpose(1, 2, 0)
    assert len(np.unique(expected)) > 1, "a constant prediction would not test the voxel order"
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "examples_ybr_color.nii.gz").dataobj), expected)
    assert "converted to grey (BT.601 luma) for the grey model" in out
    assert "no ImageOrientationPatient" in out


def test_colour_series_folder_is_luma_as_the_file_is(models, tmp_path, capsys):
    series = tmp_path / "series"
    copy_to(series, "examples_rgb_color.dcm")
    args = ["--checkpoint", models["synapse"], "--dataset", "acdc", "--output", tmp_path / "out"]
    status, out, err = run_predict(capsys, *args, "--input", series)
    assert status == 0, err
    assert "colour series converted to grey" in out
    status, _, err = run_predict(capsys, *args, "--input", series / "examples_rgb_color.dcm")
    assert status == 0, err
    from_series, from_file = (nib.load(tmp_path / "out" / name) for name in ("series.nii.gz",
                                                                           "examples_rgb_color.nii.gz"))
    np.testing.assert_array_equal(np.asarray(from_series.dataobj), np.asarray(from_file.dataobj))
    np.testing.assert_allclose(from_series.affine, from_file.affine)


def test_colour_grey_and_multi_frame_files_for_an_rgb_model_equal_their_png_exports(models, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    copy_to(inputs, "examples_rgb_color.dcm", "us.dcm")
    Image.fromarray(stored("examples_rgb_color.dcm")).save(inputs / "us_export.png")
    copy_to(inputs, "SC_rgb_rle_2frame.dcm", "two.dcm")
    for index, frame in enumerate(stored("SC_rgb_rle_2frame.dcm"), start=1):
        Image.fromarray(frame).save(inputs / f"two_export{index}.png")
    copy_to(inputs, "MR_small.dcm", "mr.dcm")  # grey: windowed, repeated in R, G, B (see the reader test)
    Image.fromarray(np.repeat(dicom_picture(real("MR_small.dcm"), 3)[0][..., :1], 3, axis=-1)).save(
        inputs / "mr_export.png")
    status, out, err = run_predict(capsys, "--checkpoint", models["isic"], "--input", inputs, "--output",
                                   tmp_path / "out", "--save_overlays")
    assert status == 0, err

    def mask(name):
        return np.asarray(Image.open(tmp_path / "out" / f"{name}.png"))

    masks = {name: mask(name) for name in ("us", "two_frame001", "two_frame002", "mr")}
    assert all(len(np.unique(m)) > 1 for m in masks.values()), "constant masks would not test the pixels"
    assert masks["us"].shape == (240, 320) and masks["two_frame001"].shape == (100, 100)
    np.testing.assert_array_equal(masks["us"], mask("us_export"))
    np.testing.assert_array_equal(masks["two_frame001"], mask("two_export1"))
    np.testing.assert_array_equal(masks["two_frame002"], mask("two_export2"))
    np.testing.assert_array_equal(masks["mr"], mask("mr_export"))
    assert (tmp_path / "out" / "overlays" / "two_frame002.png").is_file()
    assert {row["case"] for row in read_csv(tmp_path / "out" / "volumes.csv")} >= set(masks)
    assert f"note: {inputs / 'mr.dcm'}: grey image repeated in R, G and B for the colour model" in out
    assert not [line for line in out.splitlines() if line.startswith("note: ") and "two.dcm" in line]  # plain RGB


def test_bad_dicom_inputs_one_line_each_nothing_half_written(models, tmp_path, capsys, monkeypatch):
    inputs = tmp_path / "inputs"
    copy_to(inputs, "examples_rgb_color.dcm", "good.dcm")
    copy_to(inputs, "MR_truncated.dcm", "truncated.dcm")
    copy_to(inputs, "rtplan.dcm", "plan.dcm")
    copy_to(inputs, "MR_small_jpeg_ls_lossless.dcm", "jpegls.dcm", decodable=False)  # made undecodable below
    copy_to(inputs, "SC_rgb_rle_2frame.dcm", "rle2.dcm")  # two frames, undecodable: one line, not one per frame
    (inputs / "garbage.dcm").write_bytes(b"not DICOM" * 50)
    mpeg2_file(inputs / "mpeg2.dcm")
    jpeg_ls_unavailable(monkeypatch)
    monkeypatch.setattr(get_decoder(RLELossless), "_available", {})
    out = tmp_path / "out"
    status, _, err = run_predict(capsys, "--checkpoint", models["isic"], "--input", inputs, "--output", out,
                                 "--save_probabilities", "--save_overlays")
    assert status == 1
    expected = {"truncated.dcm": "truncated", "plan.dcm": "no pixel data", "garbage.dcm": "not a DICOM file",
                "jpegls.dcm": "transfer syntax JPEG-LS Lossless Image Compression",
                "rle2.dcm": "transfer syntax RLE Lossless", "mpeg2.dcm": "MPEG2"}
    lines = error_lines(err)
    assert len(lines) == len(expected), err
    for name, problem in expected.items():
        assert sum(line.startswith(f"error: {inputs / name}: ") and problem in line for line in lines) == 1, lines
    assert sorted(path.name for path in out.iterdir()) == ["good.png", "good_probabilities.npz", "overlays",
                                                           "volumes.csv"]
    assert [path.name for path in (out / "overlays").iterdir()] == ["good.png"]

    # volume model: a truncated CT and a 4-D enhanced file, each alone, exit 1 with one line, no label map
    raw = real("CT_small.dcm").read_bytes()
    (tmp_path / "half.dcm").write_bytes(raw[: len(raw) // 2])
    fourd, _ = enhanced_ct(tmp_path / "fourd.dcm", [0.0, 0.0, 4.0, 4.0], [(1.0, 0.0)] * 4)
    for path, problem in ((tmp_path / "half.dcm", "truncated"), (fourd, "4-D multi-frame file")):
        volume_out = tmp_path / f"out_{path.stem}"
        status, _, err = run_predict(capsys, "--checkpoint", models["synapse"], "--input", path, "--output",
                                     volume_out, "--save_probabilities")
        lines = error_lines(err)
        assert status == 1 and len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and problem in lines[0]
        assert sorted(item.name for item in volume_out.iterdir()) == ["volumes.csv"]


def test_frame_notes_are_printed_once(models, tmp_path, capsys):
    status, out, err = run_predict(capsys, "--checkpoint", models["isic"], "--input", real("examples_ybr_color.dcm"),
                                   "--output", tmp_path)
    assert status == 0, err
    assert len(list(tmp_path.glob("examples_ybr_color_frame*.png"))) == 30
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert notes == [f"note: {real('examples_ybr_color.dcm')} (all 30 frames): YBR_FULL_422 converted to RGB"]



def test_a_file_without_preamble_and_file_meta_is_read_as_implicit_little_endian(tmp_path):
    """Older exports store the bare data set (no 128-byte preamble, no 'DICM', no file meta information)."""
    ds = pydicom.dcmread(real("CT_small.dcm"))
    with open(tmp_path / "bare.dcm", "wb") as handle:
        out = DicomFileLike(handle)
        out.is_little_endian, out.is_implicit_VR = True, True
        write_dataset(out, Dataset(ds))
    assert (tmp_path / "bare.dcm").read_bytes()[:4] == bytes([0x08, 0x00, 0x05, 0x00])  # starts with (0008,0005)
    np.testing.assert_array_equal(dicom_volume(tmp_path / "bare.dcm").data, dicom_volume(real("CT_small.dcm")).data)


def test_jpeg_2000_ybr_rct_ultrasound_comes_out_as_rgb():
    """YBR_RCT has no uncompressed twin in the wheel. In a B-mode ultrasound picture most pixels are grey
    (R = G = B), and samples left in a luma/chroma space would not be: 95% of the decoded pixels are grey within 8
    levels, as in the wheel's uncompressed RGB ultrasound (93%)."""
    def grey_fraction(picture):
        picture = picture.astype(int)
        return ((abs(picture[..., 0] - picture[..., 1]) < 8) & (abs(picture[..., 2] - picture[..., 1]) < 8)).mean()

    picture, notes = dicom_picture(real("examples_jpeg2k.dcm"))
    assert picture.shape == (480, 640, 3) and "YBR_RCT converted to RGB" in notes
    assert grey_fraction(picture) > 0.9 and grey_fraction(stored("examples_rgb_color.dcm")) > 0.9

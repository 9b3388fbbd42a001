"""Reading and writing files, for training, testing and prediction alike; every problem with a file is a
:class:`~datasets.errors.DataError` naming it, every write is atomic (a temporary name in the target folder, then a
rename), so an interrupted run never leaves a half-written file under a final name.

    atomic    atomic_path (the one atomic writer), atomic_write_bytes / atomic_write_text
    arrays    .npz and .h5 files of named arrays (the prepared formats)
    lists     split lists (one entry per line)
    nifti     NIfTI volumes: raw scans in, label maps and volumes out
    volumes   RawVolume: a scan as stored (voxels, affine, header), whatever its file format
    dicom     single DICOM files (pydicom): a volume, or one frame as a picture
    dicom_series  a folder of one DICOM series (SimpleITK)
    images    PNG / JPEG / BMP: RGB images and masks in, PNGs out
    pairs     a folder of image/mask pairs (``python -m datasets.io.pairs`` writes one from a listed split)

The submodules are imported where they are used (``from datasets.io.nifti import read_nifti``): the readers' libraries
(nibabel, pydicom, SimpleITK) load only for the files that need them.
"""

"""Segment your own scans and images with a trained checkpoint of any registered model and data set:

    python predict.py --checkpoint runs/synapse/last.pth --input scans/ --output predictions/

Inputs: NIfTI (.nii, .nii.gz), DICOM series folders, the prepared formats (.npz, .npy.h5) and PNG / JPEG / BMP for
the 2-D image sets; `python predict.py --help` lists the options. See the package utils/predict/.
"""
import sys

from utils.predict import main

if __name__ == "__main__":
    sys.exit(main())

"""Users' own labelled data sets (nnU-Net v2 raw, Medical Segmentation Decathlon, a plain 2-D image/mask folder),
prepared by ``python -m datasets.prepare.own --src RAW --out data/NAME`` into the existing prepared formats (Synapse
slices and volumes, or the colour sets' npz items) plus a descriptor; ``--dataset data/NAME`` then works as a name.

    descriptor   the descriptor file: schema, reader, writer
    formats      a raw set's format told apart, its channels, labels and cases (names and dataset.json only)
    volumes      reading .nii.gz / .nii / .nrrd / .mha (voxels and RAS affine, or the header alone)
    cases        one case loaded, checked, prepared and written (the preparation's worker unit)
    geometry     canonical orientation, slice axes, in-plane resampling, and back to the original grid
    intensity    CT (nnU-Net's foreground statistics or a window), per-case z-score, noNorm, RGB
    scan         one scan or picture -> the model's input, as preparation did (shared with predict.py)
    splits       splits_final.json folds, labelled imagesTs, seeded blocks
    preparation  the whole run: plan, workers, temporary folder, lists and descriptor
    spec         the DatasetSpec of a prepared folder (what makes --dataset PATH work)
The submodules are imported where they are used.
"""

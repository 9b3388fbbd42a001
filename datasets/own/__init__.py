"""Users' own labelled data sets (nnU-Net v2 raw, Medical Segmentation Decathlon, a plain 2-D image/mask folder),
prepared by ``python -m datasets.prepare.own --src RAW --out data/NAME`` into the existing prepared formats (Synapse
slices and volumes, or the colour sets' npz items) plus a descriptor (:mod:`.descriptor`).

    descriptor  the descriptor file: schema, reader, writer
The other submodules are imported where they are used.
"""

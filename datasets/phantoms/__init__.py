"""Deterministic synthetic stand-ins of the registered data sets, in their real on-disk formats.

They let the whole pipeline (training, testing, metrics) run with no real data. One generator per set,
``datasets/phantoms/<name>.py`` (its prepared layout, and for the colour sets a fake official download, the input of
``datasets.prepare.<name>``), shared geometry in :mod:`.shapes` (volumes, colour images, the writers' checks) and
:mod:`.ultrasound` (BUSI, BUS). A spec names its writers by module path (:class:`datasets.registry.PhantomSpec`),
so the specs never import this package. Every case is drawn from ``np.random.default_rng([seed, case_number])``:
same seed -> identical files.

    python -m datasets.phantoms --dataset synapse --out data/phantom    # the command line: datasets/phantoms/cli.py
"""

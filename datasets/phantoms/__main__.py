"""``python -m datasets.phantoms``: :func:`datasets.phantoms.cli.main`."""
import sys

from .cli import main

sys.exit(main())

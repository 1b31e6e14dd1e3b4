"""Reading PNGs back in tests (quicklooks, screenshots) with GDAL's PNG driver."""

from __future__ import annotations

import warnings

import numpy as np
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile


def pixels(png: bytes) -> np.ndarray:
    """(band, row, col) uint8 of a PNG; fails if ``png`` is not one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile(png) as memory, memory.open() as dataset:
            assert dataset.driver == "PNG"
            return dataset.read()

"""Reading PNGs back in tests (quicklooks, screenshots) with GDAL's PNG driver."""

from __future__ import annotations

import base64
import re
import urllib.parse
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


QUICKLOOK = re.compile(r"!\[quicklook\]\((data:image/svg\+xml,[^)\s]+)\)")
EMBEDDED_PNG = re.compile(r"href='data:image/png;base64,([A-Za-z0-9+/=]+)'")


def quicklook_svg(markdown: str) -> str:
    """The SVG text of a summary's inlined quicklook (picture, legend, scale bar)."""
    match = QUICKLOOK.search(markdown)
    assert match, "the summary has no inlined quicklook"
    return urllib.parse.unquote(match.group(1).removeprefix("data:image/svg+xml,"))


def quicklook_pixels(markdown: str) -> np.ndarray:
    """The picture inside a summary's quicklook, as ``pixels`` reads it."""
    found = EMBEDDED_PNG.search(quicklook_svg(markdown))
    assert found, "the quicklook embeds no PNG"
    return pixels(base64.b64decode(found.group(1)))

"""One web-mercator tile of a raster layer, as a PNG.

morecantile places the tile, the level whose pixel is the finest not finer
than the tile's is read (GDAL's overview rule), GDAL warps the window onto
the tile (nearest: classes stay classes; averaging was done by the pyramid),
and rio-tiler rescales to the colour limits, applies the colour map and
encodes. Only the tile's window is read: a chunk or a few per tile.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import morecantile
import numpy as np
import zarr
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import from_bounds
from rasterio.warp import Resampling, reproject, transform_bounds
from rio_tiler.colormap import cmap
from rio_tiler.models import ImageData

from ..store import DATA_VAR, zarr_store
from .layers import Band, Level, RasterLayer

TILE_SIZE = 256
TMS = morecantile.tms.get("WebMercatorQuad")
# One colour map per kind of band: values on viridis, probabilities on blues (nothing to certain).
RAMPS = {"values": "viridis", "probability": "blues"}
# Classes: the 20 colours of matplotlib's tab20, in its order (class 0 first).
CLASS_COLOURS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
    (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
    (219, 219, 141), (158, 218, 229),
]
# zlib level 1: a quarter of level 6's CPU, tiles a few percent larger (loopback does not mind).
PNG_ZLEVEL = 1


class TileSource:
    """The open arrays of one raster layer; safe to share between the server's threads."""

    def __init__(self, layer: RasterLayer, storage_options: dict[str, Any] | None = None):
        self.layer = layer
        self.crs = CRS.from_user_input(layer.crs)
        self.storage_options = storage_options
        self._arrays: dict[int, zarr.Array] = {}
        self._lock = threading.Lock()

    def array(self, level: int) -> zarr.Array:
        with self._lock:
            if level not in self._arrays:
                uri = self.layer.levels[level].uri
                self._arrays[level] = zarr.open_array(zarr_store(uri, self.storage_options, read_only=True),
                                                      path=DATA_VAR, mode="r", zarr_format=3)
            return self._arrays[level]

    def level_for(self, bounds: tuple[float, float, float, float]) -> int:
        """The coarsest level whose pixel is not coarser than the tile's (GDAL's overview choice)."""
        x0, y0, x1, y1 = bounds
        wanted = min((x1 - x0), (y1 - y0)) / TILE_SIZE
        fits = [n for n, lvl in enumerate(self.layer.levels) if lvl.resolution <= wanted * 1.001]
        return max(fits) if fits else 0

    def tile(self, z: int, x: int, y: int, time: int, bands: list[int],
             limits: list[tuple[float, float]] | None = None) -> bytes | None:
        """The PNG of tile (z, x, y) of time slice ``time`` drawing ``bands`` (1: a ramp, 3: RGB);
        None when the tile holds no data. ``limits``: per band, else the layer's."""
        tile_bounds = TMS.xy_bounds(morecantile.Tile(x, y, z))
        bounds = transform_bounds(TMS.rasterio_crs, self.crs, *tile_bounds, densify_pts=21)
        level = self.level_for(bounds)
        read = self._read(level, time, bands, bounds)
        if read is None:
            return None
        data, transform = read
        nodata = self.layer.nodata if self.layer.nodata is not None else math.nan
        warped = np.full((len(bands), TILE_SIZE, TILE_SIZE), nodata, dtype=data.dtype)
        reproject(data, warped, src_transform=transform, src_crs=self.crs, src_nodata=nodata,
                  dst_transform=from_bounds(*tile_bounds, TILE_SIZE, TILE_SIZE), dst_crs=TMS.rasterio_crs,
                  dst_nodata=nodata, resampling=Resampling.nearest)
        invalid = np.isnan(warped) if math.isnan(nodata) else warped == nodata
        if invalid.all():
            return None
        return render(warped, np.asarray(invalid.any(axis=0)), [self.layer.bands[b] for b in bands], limits)

    def _read(self, level: int, time: int, bands: list[int],
              bounds: tuple[float, float, float, float]) -> tuple[np.ndarray, Affine] | None:
        """The level's pixels under ``bounds`` (plus one on each side), or None outside the level."""
        lvl: Level = self.layer.levels[level]
        inverse = ~Affine(*lvl.transform)
        cols, rows = zip(*(inverse * (bx, by) for bx in bounds[0::2] for by in bounds[1::2]), strict=True)
        c0, c1 = max(0, math.floor(min(cols)) - 1), min(lvl.width, math.ceil(max(cols)) + 1)
        r0, r1 = max(0, math.floor(min(rows)) - 1), min(lvl.height, math.ceil(max(rows)) + 1)
        if c0 >= c1 or r0 >= r1:
            return None
        # A slice of bands reads each chunk once; a list of indexes is an orthogonal read, ~6x slower.
        first, last = min(bands), max(bands)
        block = np.asarray(self.array(level)[time, first : last + 1, r0:r1, c0:c1])
        data = np.ascontiguousarray(block[[b - first for b in bands]])
        return data, Affine(*lvl.transform) * Affine.translation(c0, r0)


def render(data: np.ndarray, invalid: np.ndarray, bands: list[Band],
           limits: list[tuple[float, float]] | None = None) -> bytes:
    """PNG of 1 band (its colour map, or one colour per class) or 3 (RGB), stretched to ``limits``
    (else each band's own), with nodata transparent."""
    ranges = limits or [(b.low, b.high) for b in bands]
    mask = np.broadcast_to(invalid, data.shape)
    if len(bands) == 1 and bands[0].kind == "classes":
        values = np.where(invalid, 0, data[0]).astype("int64")
        image = ImageData(np.ma.MaskedArray(values.clip(0, 255).astype("uint8")[None], mask=mask))
        colours = {c: (*CLASS_COLOURS[n % len(CLASS_COLOURS)], 255) for n, c in enumerate(bands[0].classes)
                   if 0 <= c <= 255}
        return image.render(img_format="PNG", colormap=colours, ZLEVEL=PNG_ZLEVEL)
    image = ImageData(np.ma.MaskedArray(data.astype("float32"), mask=mask))
    image.rescale(in_range=ranges)
    if len(bands) == 1:
        return image.render(img_format="PNG", colormap=cmap.get(RAMPS[bands[0].kind]), ZLEVEL=PNG_ZLEVEL)
    return image.render(img_format="PNG", ZLEVEL=PNG_ZLEVEL)


def ramp_colours(kind: str, steps: int = 8) -> list[str]:
    """CSS colours of a band kind's ramp, low to high: the legend's gradient."""
    colours = cmap.get(RAMPS[kind])
    return [_hex(colours[round(i * 255 / (steps - 1))][:3]) for i in range(steps)]


def class_colours(classes: list[int]) -> list[str]:
    return [_hex(CLASS_COLOURS[n % len(CLASS_COLOURS)]) for n in range(len(classes))]


def _hex(rgb) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb)

"""Warp and composite tiles into one window of the output grid, with GDAL.

Each tile goes through a ``WarpedVRT`` onto the window's grid, and valid pixels
of later tiles overwrite earlier ones: the compositing of gdalwarp with several
inputs and of GDAL's GTI driver (sources in ascending priority, the last on top).

Exact transformation. GDAL's default approximate transformer (0.125 px error)
interpolates coordinates along each row of the region being warped, so a
nearest-neighbour result depends on how the grid is cut into chunks: measured on
the Landsat sample to EPSG:3857, 3.7% of pixels changed between one whole-grid
warp and 300 px chunks. A mosaic built in partitions must not depend on the
partitioning, so we ask GDAL for exact transformation (``gdalwarp -et 0``).
rasterio 1.4's WarpedVRT rejects a tolerance of exactly 0, so we pass a
tolerance far below any pixel size, which makes GDAL's approximator fall back
to the exact transform everywhere (checked pixel for pixel against PROJ).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import rasterio
from pydantic import BaseModel, ConfigDict
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.features import geometry_mask
from rasterio.vrt import WarpedVRT

from ..enums import ResamplingMethod
from .grid import Grid
from .tileindex import _read_error, tile_env
from . import uris

EXACT_TOLERANCE = 1e-9

_RESAMPLING = {
    ResamplingMethod.NEAREST: Resampling.nearest,
    ResamplingMethod.BILINEAR: Resampling.bilinear,
    ResamplingMethod.CUBIC: Resampling.cubic,
    ResamplingMethod.CUBIC_SPLINE: Resampling.cubic_spline,
    ResamplingMethod.LANCZOS: Resampling.lanczos,
    ResamplingMethod.AVERAGE: Resampling.average,
    ResamplingMethod.MODE: Resampling.mode,
    ResamplingMethod.MIN: Resampling.min,
    ResamplingMethod.MAX: Resampling.max,
    ResamplingMethod.MED: Resampling.med,
    ResamplingMethod.Q1: Resampling.q1,
    ResamplingMethod.Q3: Resampling.q3,
    ResamplingMethod.SUM: Resampling.sum,
    ResamplingMethod.RMS: Resampling.rms,
}


class TileRead(BaseModel):
    """One tile as a partition reads it: where, which bands, its nodata."""

    model_config = ConfigDict(frozen=True)

    uri: str
    band_indexes: tuple[int, ...]
    nodata: float | None


def gdal_resampling(method: ResamplingMethod) -> Resampling:
    return _RESAMPLING[method]


def _valid(values: np.ndarray, nodata: float) -> np.ndarray:
    return ~np.isnan(values) if np.isnan(nodata) else values != nodata


def render_window(
    grid: Grid,
    tiles: list[TileRead],
    dtype: str,
    nodata: float,
    resampling: ResamplingMethod,
    mask_geometry=None,
    requester_pays: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> np.ndarray:
    """Pixels of ``grid`` (bands, rows, cols) from ``tiles`` in ascending priority.

    Pixels whose centre falls outside ``mask_geometry`` (in the grid's CRS) are
    nodata, as are pixels no tile covers. ``storage_options`` are the tiles'
    (s3fs options, also turned into GDAL's /vsis3/ configuration).
    """
    shape = (len(tiles[0].band_indexes) if tiles else 0, grid.height, grid.width)
    out = np.full(shape, nodata, dtype=dtype)
    scratch = np.empty_like(out)
    kernel = gdal_resampling(resampling)
    with tile_env(requester_pays, storage_options):
        for tile in tiles:
            try:
                with rasterio.open(uris.rasterio_path(tile.uri)) as src, WarpedVRT(
                    src, crs=grid.rio_crs, transform=grid.affine, width=grid.width, height=grid.height,
                    resampling=kernel, src_nodata=tile.nodata, nodata=nodata, dtype=dtype,
                    tolerance=EXACT_TOLERANCE,
                ) as vrt:
                    vrt.read(indexes=list(tile.band_indexes), out=scratch)
            except RasterioError as exc:
                raise _read_error(tile.uri, exc, storage_options) from None
            valid = _valid(scratch, nodata)
            np.copyto(out, scratch, where=valid)
    if mask_geometry is not None and shape[0]:
        outside = geometry_mask([mask_geometry], out_shape=shape[1:], transform=grid.affine)
        out[:, outside] = nodata
    return out

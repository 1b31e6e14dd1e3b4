"""A store to Cloud Optimized GeoTIFFs: one per time slice, written a block of rows at a time.

Level 0 is copied into a tiled GeoTIFF in strips of whole chunk rows (memory: one strip),
then GDAL's COG driver lays it out with overviews down to one tile, resampled as the
pyramid's levels are (average; mode for class bands), so the overviews GDAL and QGIS
show are the pyramid's pixels (for exact 2x levels, GDAL's average equals ours).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
import zarr
from affine import Affine

from .. import uris
from ..store import DATA_VAR, zarr_store
from ..view.layers import RasterLayer
from . import stem

COG_OPTIONS = {"COMPRESS": "DEFLATE", "BLOCKSIZE": 512, "BIGTIFF": "IF_SAFER", "NUM_THREADS": "ALL_CPUS"}


def store_to_cogs(layer: RasterLayer, folder: str, storage_options_for: uris.OptionsFor) -> list[str]:
    level = layer.levels[0]
    array = zarr.open_array(zarr_store(level.uri, storage_options_for(level.uri), read_only=True),
                            path=DATA_VAR, mode="r", zarr_format=3)
    nodata = layer.nodata if layer.nodata is not None else math.nan
    resampling = "MODE" if any(b.kind == "classes" for b in layer.bands) else "AVERAGE"
    predictor = 3 if np.issubdtype(array.dtype, np.floating) else 2
    # As many overviews as the pyramid has levels above 0 (each 2x the one before); without one, GDAL's
    # default: halve until the image fits one block.
    overviews = {"OVERVIEW_COUNT": len(layer.levels) - 1} if len(layer.levels) > 1 else {"OVERVIEWS": "AUTO"}
    written = []
    for t, label in enumerate(layer.times):
        name = f"{stem(layer.uri)}.tif" if len(layer.times) == 1 else f"{stem(layer.uri)}-{label}.tif"
        target = uris.join(folder, name)
        with tempfile.TemporaryDirectory() as tmp:
            plain = os.path.join(tmp, "plain.tif")
            _write_plain(array, t, layer, Affine(*level.transform), nodata, plain)
            local = target if uris.is_local(target) else os.path.join(tmp, name)
            Path(local).parent.mkdir(parents=True, exist_ok=True)
            rasterio.shutil.copy(plain, local, driver="COG", OVERVIEW_RESAMPLING=resampling,
                                 PREDICTOR=predictor, **COG_OPTIONS, **overviews)
            if local != target:
                fs, path = uris.filesystem(target, storage_options_for(target))
                fs.put(local, path)
        written.append(target)
    return written


def _write_plain(array: zarr.Array, t: int, layer: RasterLayer, transform: Affine, nodata: float,
                 path: str) -> None:
    _, bands, height, width = array.shape
    profile = {"driver": "GTiff", "width": width, "height": height, "count": bands, "dtype": array.dtype.name,
               "crs": layer.crs, "transform": transform, "nodata": nodata, "tiled": True,
               "blockxsize": 512, "blockysize": 512, "BIGTIFF": "IF_SAFER"}
    rows = array.chunks[-2] * max(1, 4096 // array.chunks[-2])
    with rasterio.open(path, "w", **profile) as out:
        for r0 in range(0, height, rows):
            r1 = min(height, r0 + rows)
            out.write(np.asarray(array[t, :, r0:r1, :]), window=((r0, r1), (0, width)))
        for i, band in enumerate(layer.bands, start=1):
            out.set_band_description(i, band.name)
        out.update_tags(TIME=layer.times[t], SOURCE=layer.uri)

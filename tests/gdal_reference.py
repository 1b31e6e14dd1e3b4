"""Independent references for mosaic tests: GDAL's own warp, and PROJ per pixel.

``gdal_mosaic`` warps each tile onto the whole output grid in one
``rasterio.warp.reproject`` call (GDAL's ChunkAndWarpImage), compositing later
tiles on top exactly as gdalwarp does with several inputs. It shares no code
with rasterflow's partitioned WarpedVRT path.
"""

from __future__ import annotations

import numpy as np
import rasterio
from affine import Affine
from rasterio.features import geometry_mask
from rasterio.warp import Resampling, reproject


def gdal_mosaic(paths, bands, crs, transform: Affine, shape, nodata,
                resampling=Resampling.nearest, mask_geometry=None):
    out = None
    for path in paths:
        with rasterio.open(path) as src:
            idx = [list(src.descriptions).index(b) + 1 for b in bands]
            if out is None:
                out = np.full((len(idx), *shape), nodata, dtype=src.dtypes[0])
            reproject(
                rasterio.band(src, idx), out, src_nodata=src.nodata, dst_transform=transform, dst_crs=crs,
                dst_nodata=nodata, resampling=resampling, init_dest_nodata=False,
            )
    if mask_geometry is not None:
        out[:, geometry_mask([mask_geometry], out_shape=shape, transform=transform)] = nodata
    return out

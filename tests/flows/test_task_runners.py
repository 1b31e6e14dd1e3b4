"""The dask task runner from config: build-shard tasks run on Dask worker processes."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import xarray as xr

from rasterflow import RasterflowClient
from rasterflow.config import RasterflowConfig


def test_dask_local_cluster_gives_the_same_mosaic_as_threads(landsat, tmp_path):
    args = (str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), ["red", "green"], "location")
    kwargs = dict(crs_epsg=32621, xy_chunksize=128, shard_size_bytes=256 * 256 * 4)
    results = []
    for runner in ("threads", "dask"):
        config = RasterflowConfig(output_uri=str(tmp_path / runner), task_runner=runner, max_workers=2)
        index = gpd.read_parquet(RasterflowClient(config).build_gti_mosaic(*args, **kwargs))
        results.append(xr.open_zarr(index.location[0])["variables"].values)
    np.testing.assert_array_equal(results[0], results[1])
    assert (results[1] != 0).any()

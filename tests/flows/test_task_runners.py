"""Task runners from config: build-shard tasks run on threads or Dask worker processes, alike."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import xarray as xr

from rasterflow import RasterflowClient, ResamplingMethod
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


@pytest.mark.parametrize("warp_error_threshold", [0.125, 0.0])
@pytest.mark.parametrize("resampling", [ResamplingMethod.NEAREST, ResamplingMethod.BILINEAR])
def test_shards_workers_and_runners_never_change_a_pixel(landsat, tmp_path, resampling, warp_error_threshold):
    """Reprojected (to EPSG:3857, where GDAL's approximate transformer matters) with three shard
    sizes, 1, 4 and 2 workers, threads and Dask: one result."""
    args = (str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), ["red"], "location")
    runs = [("threads", 1, 128 * 128 * 2), ("threads", 4, 256 * 192 * 2), ("dask", 2, 10**9)]
    results = []
    for runner, workers, shard_size_bytes in runs:
        config = RasterflowConfig(output_uri=str(tmp_path / f"{runner}-{workers}"), task_runner=runner,
                                  max_workers=workers)
        index = gpd.read_parquet(RasterflowClient(config).build_gti_mosaic(
            *args, resolution=60.0, xy_chunksize=64, shard_size_bytes=shard_size_bytes, resampling=resampling,
            warp_error_threshold=warp_error_threshold))
        results.append(xr.open_zarr(index.location[0])["variables"].values)
    assert (results[0] != 0).mean() > 0.5
    for run, result in zip(runs[1:], results[1:], strict=True):
        np.testing.assert_array_equal(result, results[0], err_msg=f"runner, workers, shard bytes: {run}")

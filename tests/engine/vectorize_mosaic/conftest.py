"""The real raster every vectorize engine test works on, built once by the mosaic engine."""

from __future__ import annotations

import pytest

from rasterflow.engine.build_gti_mosaic.plan import plan_gti_mosaic
from rasterflow.engine.build_gti_mosaic.shard import build_shard
from rasterflow.engine.grid import Grid
from rasterflow.engine.index import read_index, write_index
from rasterflow.engine.store import commit_store, create_store, open_store
from rasterflow.params import BuildGtiMosaicParams


@pytest.fixture(scope="session")
def mosaic(landsat, tmp_path_factory) -> str:
    """Index of the Landsat sample built by the engine: red and green, 32 px chunks."""
    params = BuildGtiMosaicParams.parse(
        gti=str(landsat / "tiles.parquet"), aoi=str(landsat / "aoi.geojson"), bands=["red", "green"],
        location_field="location", crs_epsg=32621, xy_chunksize=32, shard_size_bytes=256 * 256 * 4,
    )
    plan = plan_gti_mosaic(params, str(tmp_path_factory.mktemp("mosaic")))
    for store in plan.stores:
        create_store(store.spec, store.fingerprint, plan.provenance)
        for job in store.jobs:
            build_shard(job)
        commit_store(store.spec.uri)
    return write_index(plan.index_rows(), plan.index_uri)


@pytest.fixture(scope="session")
def raster(mosaic):
    """(red, green) pixels, the store's grid and nodata."""
    ds = open_store(read_index(mosaic).location[0])
    var = ds["variables"]
    grid = Grid(crs=ds.rio.crs.to_wkt(), transform=tuple(ds.rio.transform())[:6],
                width=var.sizes["x"], height=var.sizes["y"])
    return var.isel(time=0).values, grid, float(var.attrs["nodata"])



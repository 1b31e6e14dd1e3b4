"""Stores the viewer tests draw: the Landsat sample mosaicked by the engine, its pyramid, polygons."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import shapely

from rasterflow.engine.build_gti_mosaic.plan import plan_gti_mosaic
from rasterflow.engine.build_gti_mosaic.shard import build_shard
from rasterflow.engine.build_zarr_multiscales.plan import plan_multiscales
from rasterflow.engine.build_zarr_multiscales.stages import build_pyramids
from rasterflow.engine.store import commit_store, create_store
from rasterflow.params import BuildGtiMosaicParams, BuildZarrMultiscalesParams

BANDS = ["red", "green", "blue"]


def mosaic(landsat: Path, out: Path, crs_epsg: int = 32621, chunk: int = 128) -> str:
    """The Landsat sample at 60 m (engine only, no Prefect): 3 uint16 bands, nodata 0 outside the AOI."""
    params = BuildGtiMosaicParams.parse(
        gti=str(landsat / "tiles.parquet"), aoi=str(landsat / "aoi.geojson"), bands=BANDS,
        location_field="location", crs_epsg=crs_epsg, resolution=60, xy_chunksize=chunk,
        shard_size_bytes=2 * chunk * 2 * chunk * 6,
    )
    plan = plan_gti_mosaic(params, str(out))
    (store,) = plan.stores
    create_store(store.spec, store.fingerprint, plan.provenance)
    for job in store.jobs:
        build_shard(job)
    commit_store(store.spec.uri)
    return store.spec.uri


def pyramid(store: str, out: Path) -> str:
    plan = plan_multiscales(BuildZarrMultiscalesParams.parse(store=store), str(out))
    build_pyramids(plan.pyramids, plan.provenance)
    return plan.pyramids[0].uri


def polygons(landsat: Path, path: Path, count: int = 3) -> str:
    """``count`` squares inside the sample's AOI, labelled water, as GeoParquet in EPSG:4326."""
    aoi = gpd.read_file(landsat / "aoi.geojson").to_crs("EPSG:32621").geometry[0]
    x, y = aoi.centroid.x, aoi.centroid.y
    squares = [shapely.box(x + 1500 * i, y, x + 1500 * i + 1000, y + 1000) for i in range(count)]
    frame = gpd.GeoDataFrame({"label": ["water"] * count}, geometry=squares, crs="EPSG:32621")
    frame.to_crs("EPSG:4326").to_parquet(path, write_covering_bbox=True)
    return str(path)

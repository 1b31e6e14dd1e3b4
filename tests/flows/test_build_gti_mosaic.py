"""build_gti_mosaic end to end: real tiles, real GDAL, real Zarr, real Prefect."""

from __future__ import annotations

import shutil

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import xarray as xr
from gdal_reference import gdal_mosaic
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter
from prefect.client.schemas.sorting import FlowRunSort
from prefect_runs import task_states
from rasterio.warp import Resampling, calculate_default_transform
from shapely.geometry import box
from zarr_conventions import assert_follows

from rasterflow import ResamplingMethod
from rasterflow.engine.grid import reproject_geometry
from rasterflow.engine.store import open_store
from rasterflow.errors import InvalidParameterError, RasterflowError, StoreError

BANDS = ["red", "green", "blue"]


def stores(index_uri):
    index = gpd.read_parquet(index_uri)
    return index, [xr.open_zarr(loc) for loc in index.location]


def tiles_in_order(folder):
    index = gpd.read_parquet(folder / "tiles.parquet")
    return [str(folder / loc) for loc in index.location]


def aoi_in(folder, crs):
    """The AOI in ``crs``, densified first: its edges are straight in lon/lat, curved in UTM."""
    return densified(gpd.read_file(folder / "aoi.geojson").geometry[0], crs)


def densified(geom, crs):
    minx, miny, maxx, maxy = geom.bounds
    return reproject_geometry(geom.segmentize(max(maxx - minx, maxy - miny) / 64), "EPSG:4326", crs)


@pytest.fixture(scope="module")
def landsat_utm(landsat, tmp_path_factory):
    """The Landsat sample mosaicked in its own CRS at native resolution, small shards."""
    from rasterflow import RasterflowClient
    from rasterflow.config import RasterflowConfig

    client = RasterflowClient(RasterflowConfig(output_uri=str(tmp_path_factory.mktemp("utm")), max_workers=2))
    return client.build_gti_mosaic(
        str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), BANDS, "location",
        crs_epsg=32621, xy_chunksize=128, shard_size_bytes=256 * 256 * 6,
    )


def test_nearest_equals_gdal_warp_pixel_for_pixel(landsat_utm, landsat):
    index, (ds,) = stores(landsat_utm)
    data = ds["variables"]
    assert data.dims == ("time", "band", "y", "x")
    assert list(data.band.values) == BANDS
    assert data.rio.crs.to_epsg() == 32621
    transform, shape = data.rio.transform(), data.shape[-2:]
    assert (transform.a, transform.e) == (30.0, -30.0)
    expected = gdal_mosaic(tiles_in_order(landsat), BANDS, "EPSG:32621", transform, shape, 0,
                           mask_geometry=aoi_in(landsat, "EPSG:32621"))
    np.testing.assert_array_equal(data.values[0], expected)
    assert (expected != 0).mean() > 0.9  # the AOI is mostly covered: not a vacuous match


def test_store_contract_and_index(landsat_utm):
    index, (ds,) = stores(landsat_utm)
    assert list(index.columns[:2]) == ["location", "workflow"] or "location" in index.columns
    assert index.crs.to_epsg() == 4326 and len(index) == 1
    row = index.iloc[0]
    assert row["crs"] == "EPSG:32621" and list(row["bands"]) == BANDS and row["dtype"] == "uint16"
    assert index.geometry[0].contains(box(-54.6, -25.4, -54.45, -25.3))
    assert np.isnat(ds.time.values[0])
    meta = ds.attrs["rasterflow"]
    assert meta["status"] == "complete" and meta["workflow"] == "build-gti-mosaic"
    assert meta["parameters"]["bands"] == BANDS and "envs" not in meta["parameters"]
    assert ds.attrs["proj:code"] == "EPSG:32621"
    assert ds.attrs["spatial:shape"] == list(ds["variables"].shape[-2:])
    assert_follows(row.location, "proj", "spatial")  # the published schemas of what it declares
    enc = ds["variables"].encoding
    assert enc["chunks"] == (1, 3, 128, 128) and enc["shards"] == (1, 3, 256, 256)
    assert open_store(row.location)["variables"].shape == ds["variables"].shape


def test_second_identical_run_is_cached(client, landsat):
    args = (str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), BANDS, "location")
    kwargs = dict(xy_chunksize=128, shard_size_bytes=384 * 384 * 6)
    first = client.build_gti_mosaic(*args, **kwargs)
    states = task_states("build-gti-mosaic", "build-shard")
    assert len(states) > 1 and set(states) == {"Completed"}
    second = client.build_gti_mosaic(*args, **kwargs)
    assert second == first
    assert task_states("build-gti-mosaic", "build-shard") == ["Cached"] * len(states)
    (_, (ds,)) = stores(second)
    assert ds.attrs["rasterflow"]["status"] == "complete"


def test_bilinear_within_one_dn_of_gdal(client, haiti):
    """The Haiti cut-outs are offset by a fraction of a pixel, so bilinear really interpolates."""
    uri = client.build_gti_mosaic(str(haiti / "tiles.parquet"), str(haiti / "aoi.geojson"), ["red", "nir"],
                                  "location", crs_epsg=32618, resampling=ResamplingMethod.BILINEAR,
                                  xy_chunksize=64, shard_size_bytes=64 * 64 * 2)
    _, (ds,) = stores(uri)
    data = ds["variables"]
    expected = gdal_mosaic(tiles_in_order(haiti), ["red", "nir"], "EPSG:32618", data.rio.transform(),
                           data.shape[-2:], 0, resampling=Resampling.bilinear,
                           mask_geometry=aoi_in(haiti, "EPSG:32618"))
    diff = np.abs(data.values[0].astype(int) - expected.astype(int))
    assert diff.max() <= 1
    assert ((data.values[0] == 0) == (expected == 0)).all()


def test_reprojection_is_exact_and_independent_of_partitioning(client, landsat):
    """To EPSG:3857 the result must not depend on shard size (exact transform)."""
    args = (str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), ["red"], "location")
    small = stores(client.build_gti_mosaic(*args, xy_chunksize=64,
                                           shard_size_bytes=64 * 64 * 2))[1][0]["variables"]
    whole = stores(client.build_gti_mosaic(*args, xy_chunksize=64, shard_size_bytes=10**9))[1][0]["variables"]
    assert small.rio.crs.to_epsg() == 3857
    np.testing.assert_array_equal(small.values, whole.values)
    native = []
    for path in tiles_in_order(landsat):
        with rasterio.open(path) as src:
            native.append(calculate_default_transform(src.crs, "EPSG:3857", src.width, src.height,
                                                      *src.bounds)[0].a)
    assert small.rio.transform().a == pytest.approx(min(native))  # the finest, as gdalwarp picks it


def test_explicit_resolution_and_skip_xy_coords(client, landsat):
    uri = client.build_gti_mosaic(str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), BANDS,
                                  "location", crs_epsg=32621, resolution=90.0, skip_xy_coords=True)
    _, (ds,) = stores(uri)
    data = ds["variables"]
    assert "x" not in ds.coords and "y" not in ds.coords
    t = data.rio.transform()
    assert (t.a, t.e) == (90.0, -90.0) and t.c % 90 == 0 and t.f % 90 == 0
    expected = gdal_mosaic(tiles_in_order(landsat), BANDS, "EPSG:32621", t, data.shape[-2:], 0,
                           mask_geometry=aoi_in(landsat, "EPSG:32621"))
    np.testing.assert_array_equal(data.values[0], expected)


def test_time_column_groups_tiles_into_sorted_slices(client, haiti):
    uri = client.build_gti_mosaic(str(haiti / "tiles.parquet"), str(haiti / "aoi.geojson"), ["nir"],
                                  "location", crs_epsg=32618, time_column="datetime")
    _, (ds,) = stores(uri)
    data = ds["variables"]
    assert list(ds.time.values.astype("datetime64[D]").astype(str)) == ["2016-01-01", "2016-04-01"]
    for slot, name in enumerate(["rgbn_suba.tif", "rgbn_subb.tif"]):
        expected = gdal_mosaic([str(haiti / name)], ["nir"], "EPSG:32618", data.rio.transform(),
                               data.shape[-2:], 0, mask_geometry=aoi_in(haiti, "EPSG:32618"))
        np.testing.assert_array_equal(data.values[slot], expected)
    index = gpd.read_parquet(uri)
    assert str(index.start_time[0].date()) == "2016-01-01" and str(index.end_time[0].date()) == "2016-04-01"


def test_sort_field_puts_the_highest_on_top(client, haiti, tmp_path):
    """Where the two cut-outs overlap their values differ; the priority column decides."""
    index = gpd.read_parquet(haiti / "tiles.parquet")
    index["location"] = [str(haiti / loc) for loc in index.location]
    index["priority"] = [2, 1]  # the first row on top, against row order
    index.to_parquet(tmp_path / "tiles.parquet")
    uri = client.build_gti_mosaic(str(tmp_path / "tiles.parquet"), str(haiti / "aoi.geojson"), ["red"],
                                  "location", crs_epsg=32618, sort_field="priority")
    data = stores(uri)[1][0]["variables"]
    order = [str(haiti / "rgbn_subb.tif"), str(haiti / "rgbn_suba.tif")]
    expected = gdal_mosaic(order, ["red"], "EPSG:32618", data.rio.transform(), data.shape[-2:], 0,
                           mask_geometry=aoi_in(haiti, "EPSG:32618"))
    np.testing.assert_array_equal(data.values[0], expected)
    row_order = gdal_mosaic(list(reversed(order)), ["red"], "EPSG:32618", data.rio.transform(),
                            data.shape[-2:], 0, mask_geometry=aoi_in(haiti, "EPSG:32618"))
    assert (expected != row_order).sum() > 1000  # the overlap really differs


def test_query_filters_tiles(client, landsat):
    query = "tile in ['r0c0', 'r1c1'] and cloud_cover >= 0"
    uri = client.build_gti_mosaic(str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), ["red"],
                                  "location", crs_epsg=32621, query=query)
    data = stores(uri)[1][0]["variables"]
    tiles = tiles_in_order(landsat)
    expected = gdal_mosaic([tiles[0], tiles[3]], ["red"], "EPSG:32621", data.rio.transform(),
                           data.shape[-2:], 0, mask_geometry=aoi_in(landsat, "EPSG:32621"))
    np.testing.assert_array_equal(data.values[0], expected)


def test_several_aoi_geometries_give_one_store_each(client, landsat, tmp_path):
    aoi = gpd.read_file(landsat / "aoi.geojson")
    minx, miny, maxx, maxy = aoi.total_bounds
    midx = (minx + maxx) / 2
    parts = gpd.GeoDataFrame(geometry=[box(minx, miny, midx, maxy),
                                       box(midx, miny, maxx, maxy).buffer(-0.02)], crs=aoi.crs)
    parts.to_file(tmp_path / "two.gpkg")
    uri = client.build_gti_mosaic(str(landsat / "tiles.parquet"), str(tmp_path / "two.gpkg"), ["red"],
                                  "location", crs_epsg=32621)
    index, datasets = stores(uri)
    assert list(index.aoi_index) == [0, 1] and len(set(index.location)) == 2
    for geom, ds in zip(parts.geometry, datasets, strict=True):
        data = ds["variables"]
        expected = gdal_mosaic(tiles_in_order(landsat), ["red"], "EPSG:32621", data.rio.transform(),
                               data.shape[-2:], 0, mask_geometry=densified(geom, "EPSG:32621"))
        np.testing.assert_array_equal(data.values[0], expected)


# --- bad input: a RasterflowError naming the parameter, before anything is written


def _nothing_written(output_root):
    return not output_root.exists() or not list(output_root.rglob("*.zarr"))


@pytest.mark.parametrize(
    "change, param",
    [
        (dict(bands=["red", "swir"]), "bands"),
        (dict(location_field="path"), "location_field"),
        (dict(gti="/nonexistent/tiles.parquet"), "gti"),
        (dict(aoi="/nonexistent/aoi.geojson"), "aoi"),
        (dict(crs_epsg=999999), "crs_epsg"),
        (dict(query="cloud_cover >"), "query"),
        (dict(query="__import__('os').system('touch /tmp/rasterflow-pwned')"), "query"),
        (dict(query="@secret > 1"), "query"),
        (dict(query="tile == 'nope'"), "query"),
        (dict(xy_chunksize=0), "xy_chunksize"),
        (dict(xy_chunksize=-512), "xy_chunksize"),
        (dict(time_column="when"), "time_column"),
        (dict(sort_field="rank"), "sort_field"),
        (dict(warp_error_threshold=-0.125), "warp_error_threshold"),
        (dict(warp_error_threshold=float("nan")), "warp_error_threshold"),
        (dict(warp_error_threshold=float("inf")), "warp_error_threshold"),
    ],
)
def test_bad_input_names_the_parameter(client, landsat, output_root, change, param):
    kwargs = dict(gti=str(landsat / "tiles.parquet"), aoi=str(landsat / "aoi.geojson"), bands=["red"],
                  location_field="location")
    with pytest.raises(InvalidParameterError) as err:
        client.build_gti_mosaic(**(kwargs | change))
    assert err.value.param == param and param in str(err.value)
    assert _nothing_written(output_root)


def test_aoi_outside_every_tile(client, landsat, tmp_path, output_root):
    gpd.GeoDataFrame(geometry=[box(10, 10, 11, 11)], crs="EPSG:4326").to_file(tmp_path / "far.geojson")
    with pytest.raises(InvalidParameterError, match="does not overlap") as err:
        client.build_gti_mosaic(str(landsat / "tiles.parquet"), str(tmp_path / "far.geojson"), ["red"],
                                "location")
    assert err.value.param == "aoi" and _nothing_written(output_root)


def test_tiles_without_nodata_need_an_explicit_nodata(client, haiti, tmp_path, output_root):
    for name in ("rgbn_suba.tif", "rgbn_subb.tif"):
        with rasterio.open(haiti / name) as src:
            profile = src.profile | {"nodata": None, "driver": "GTiff"}
            with rasterio.open(tmp_path / name, "w", **profile) as dst:
                dst.write(src.read())
                dst.descriptions = src.descriptions
    shutil.copy(haiti / "tiles.parquet", tmp_path / "tiles.parquet")
    args = (str(tmp_path / "tiles.parquet"), str(haiti / "aoi.geojson"), ["red"], "location")
    with pytest.raises(InvalidParameterError) as err:
        client.build_gti_mosaic(*args, crs_epsg=32618)
    assert err.value.param == "nodata" and _nothing_written(output_root)
    uri = client.build_gti_mosaic(*args, crs_epsg=32618, nodata=0)
    assert stores(uri)[1][0]["variables"].attrs["nodata"] == 0


def test_missing_tile_file_is_reported_before_writing(client, landsat, tmp_path, output_root):
    index = gpd.read_parquet(landsat / "tiles.parquet")
    index["location"] = [str(landsat / loc) for loc in index.location]
    index.loc[2, "location"] = str(tmp_path / "gone.tif")
    index.to_parquet(tmp_path / "tiles.parquet")
    with pytest.raises(InvalidParameterError, match="gti=.*gone.tif.*does not exist"):
        client.build_gti_mosaic(str(tmp_path / "tiles.parquet"), str(landsat / "aoi.geojson"), ["red"],
                                "location")
    assert _nothing_written(output_root)


def test_corrupt_tile_fails_the_run_with_its_uri_and_no_complete_store(client, landsat, tmp_path,
                                                                       output_root):
    """Header intact, pixel blocks garbage: found while building, never committed."""
    for loc in gpd.read_parquet(landsat / "tiles.parquet").location:
        shutil.copy(landsat / loc, tmp_path / loc)
    shutil.copy(landsat / "tiles.parquet", tmp_path / "tiles.parquet")
    bad = tmp_path / "LC08_224078_20200518_r1c1.tif"
    raw = bytearray(bad.read_bytes())
    with rasterio.open(bad) as src:
        header_end = min(src.block_window(1, 0, 0).width, 4096) * 4  # keep the IFD readable
    raw[header_end + 20000 :] = bytes(len(raw) - header_end - 20000)
    bad.write_bytes(bytes(raw))
    with pytest.raises(RasterflowError, match="r1c1"):
        client.build_gti_mosaic(str(tmp_path / "tiles.parquet"), str(landsat / "aoi.geojson"), ["red"],
                                "location", crs_epsg=32621, xy_chunksize=128, shard_size_bytes=128 * 128 * 2)
    (store,) = output_root.rglob("*.zarr")
    with pytest.raises(StoreError, match="incomplete"):
        open_store(str(store))
    assert not list(output_root.rglob("index.parquet"))


def test_envs_never_reach_prefect_or_provenance(client, landsat):
    uri = client.build_gti_mosaic(str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), ["red"],
                                  "location", resolution=480.0,
                                  envs={"AWS_SECRET_ACCESS_KEY": "sekrit-value"})
    with get_client(sync_client=True) as api:
        run = api.read_flow_runs(flow_filter=FlowFilter(name={"any_": ["build-gti-mosaic"]}),
                                 sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
    assert "sekrit" not in str(run.parameters) and "envs" not in run.parameters
    assert "sekrit" not in str(stores(uri)[1][0].attrs)


def test_tiles_in_several_crss(client, haiti, tmp_path):
    """One tile re-projected into the neighbouring UTM zone: the index mixes CRSs."""
    from rasterio.warp import reproject

    with rasterio.open(haiti / "rgbn_subb.tif") as src:
        t, w, h = calculate_default_transform(src.crs, "EPSG:32619", src.width, src.height, *src.bounds)
        profile = src.profile | {"driver": "GTiff", "crs": "EPSG:32619", "transform": t,
                                 "width": w, "height": h}
        with rasterio.open(tmp_path / "subb_32619.tif", "w", **profile) as dst:
            for b in range(1, src.count + 1):
                reproject(rasterio.band(src, b), rasterio.band(dst, b), resampling=Resampling.nearest)
            dst.descriptions = src.descriptions
    index = gpd.read_parquet(haiti / "tiles.parquet")
    index["location"] = [str(haiti / "rgbn_suba.tif"), str(tmp_path / "subb_32619.tif")]
    index.to_parquet(tmp_path / "tiles.parquet")
    uri = client.build_gti_mosaic(str(tmp_path / "tiles.parquet"), str(haiti / "aoi.geojson"), ["green"],
                                  "location", crs_epsg=32618)
    data = stores(uri)[1][0]["variables"]
    expected = gdal_mosaic([str(haiti / "rgbn_suba.tif"), str(tmp_path / "subb_32619.tif")], ["green"],
                           "EPSG:32618", data.rio.transform(), data.shape[-2:], 0,
                           mask_geometry=aoi_in(haiti, "EPSG:32618"))
    # GDAL's reference uses the approximate transformer: a few nearest picks may differ.
    assert (data.values[0] == expected).mean() > 0.99
    assert ((data.values[0] == 0) == (expected == 0)).mean() > 0.999

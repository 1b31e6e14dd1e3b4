"""vectorize_mosaic end to end: real mosaics, real GDAL, real Prefect, one GeoParquet out."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely
import xarray as xr
from polygon_reference import assert_same_polygons, foreground, whole_raster_polygons
from prefect_runs import task_states
from typer.testing import CliRunner

from rasterflow import RasterflowClient
from rasterflow.cli import app
from rasterflow.config import RasterflowConfig
from rasterflow.errors import InvalidParameterError

# Red DN >= 6271: a dozen land masses of 10^4..10^5 pixels around the Itaipu
# reservoir (the store's 128 px blocks are far smaller) and ~3000 specks.
THRESHOLD = 6271


def band_of(location: str, band: str, time_index: int = 0):
    """(pixels, transform, nodata) of one band and time slice of a store."""
    var = xr.open_zarr(location)["variables"]
    return (var.isel(time=time_index).sel(band=band).values, var.rio.transform(), float(var.attrs["nodata"]))


@pytest.fixture(scope="module")
def module_client(tmp_path_factory) -> RasterflowClient:
    """Polygonize in the process pool (opt-in); the ``client`` fixture's tests run it in threads."""
    return RasterflowClient(RasterflowConfig(output_uri=str(tmp_path_factory.mktemp("vec")), max_workers=2,
                                             process_pool=True))


@pytest.fixture(scope="module")
def landsat_index(module_client, landsat) -> str:
    """The Landsat sample in UTM 21N at 30 m (801 x 1001 px), 128 px chunks."""
    return module_client.build_gti_mosaic(
        str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), ["red", "green"], "location",
        crs_epsg=32621, xy_chunksize=128, shard_size_bytes=256 * 256 * 4,
    )


@pytest.fixture(scope="module")
def landsat_store(landsat_index) -> str:
    return gpd.read_parquet(landsat_index).location[0]


@pytest.fixture(scope="module")
def native(module_client, landsat_index) -> str:
    """8-connected polygons of red >= THRESHOLD in the store's CRS, one block per 128 px chunk."""
    return module_client.vectorize_mosaic(landsat_index, ["red"], THRESHOLD,
                                          vectorize_config={"connectivity": 8}, xy_block_multiplier=1,
                                          vector_crs=None)


def test_equals_whole_raster_gdal(native, landsat_store):
    got = gpd.read_parquet(native)
    red, transform, nodata = band_of(landsat_store, "red")
    fg = foreground(red, THRESHOLD, nodata)
    expected = whole_raster_polygons(fg, transform, 8)
    assert_same_polygons(got.geometry.values, expected)
    assert got.is_valid.all() and got.area.sum() == fg.sum() * 900.0
    assert list(got.columns) == ["geometry", "label", "score_mean"] and set(got.label) == {"red"}
    assert got.crs.to_epsg() == 32621
    # The objects are much bigger than the blocks: the merge did real work.
    assert shapely.area(expected).max() > 10 * 128 * 128 * 900.0


def test_default_vector_crs_is_lonlat(module_client, landsat_index, native):
    lonlat = module_client.vectorize_mosaic(landsat_index, ["red"], THRESHOLD,
                                            vectorize_config={"connectivity": 8}, xy_block_multiplier=1)
    got, ref = gpd.read_parquet(lonlat), gpd.read_parquet(native)
    assert got.crs.to_epsg() == 4326 and len(got) == len(ref)
    np.testing.assert_allclose(shapely.get_coordinates(got.to_crs(ref.crs).geometry.values),
                               shapely.get_coordinates(ref.geometry.values), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got.score_mean, ref.score_mean)
    # The bbox covering column is there for spatial filters (DuckDB, GDAL), in lon/lat.
    bbox = pq.read_table(lonlat, columns=["bbox"])["bbox"].to_pandas()
    assert math.isclose(bbox.iloc[0]["xmin"], got.geometry.iloc[0].bounds[0])


@pytest.fixture(scope="module")
def direct(module_client, landsat_store) -> str:
    """The same request on the store's URI, with 512 px blocks (4 chunks a side)."""
    return module_client.vectorize_mosaic(landsat_store, ["red"], THRESHOLD,
                                          vectorize_config={"connectivity": 8}, xy_block_multiplier=4,
                                          vector_crs=None)


def test_store_uri_and_other_blocks_give_the_same_polygons(direct, native):
    assert direct != native  # another request, another folder
    assert_same_polygons(gpd.read_parquet(direct).geometry.values, gpd.read_parquet(native).geometry.values)


def test_second_identical_call_is_served_from_cache(module_client, landsat_store, direct):
    again = module_client.vectorize_mosaic(landsat_store, ["red"], THRESHOLD,
                                           vectorize_config={"connectivity": 8}, xy_block_multiplier=4,
                                           vector_crs=None)
    assert again == direct
    states = task_states("vectorize-mosaic", "polygonize")
    assert states == ["Cached"]  # the 2 x 2 blocks fit one task at the default task_pixels
    assert task_states("vectorize-mosaic", "merge-parquet") == ["Cached"]


def test_a_task_per_block_gives_the_same_polygons(landsat_index, native, tmp_path):
    """task_pixels of one 128 px block: 56 polygonize tasks, seams joined by merge-parquet alone."""
    config = RasterflowConfig(output_uri=str(tmp_path), max_workers=2, task_pixels=128 * 128)
    uri = RasterflowClient(config).vectorize_mosaic(landsat_index, ["red"], THRESHOLD,
                                                    vectorize_config={"connectivity": 8},
                                                    xy_block_multiplier=1, vector_crs=None)
    assert len(task_states("vectorize-mosaic", "polygonize")) == 7 * 8
    got, ref = gpd.read_parquet(uri), gpd.read_parquet(native)
    assert_same_polygons(got.geometry.values, ref.geometry.values)
    np.testing.assert_array_equal(np.sort(got.score_mean.values), np.sort(ref.score_mean.values))


def test_none_when_nothing_reaches_the_threshold(client, landsat_index, output_root):
    assert client.vectorize_mosaic(landsat_index, ["red", "green"], 65535) is None
    assert not list(output_root.rglob("polygons.parquet"))


def test_several_time_slices(client, haiti):
    """Two dates of the Haiti sample in one store: a time column, and each date exact."""
    index = client.build_gti_mosaic(
        str(haiti / "tiles.parquet"), str(haiti / "aoi.geojson"), ["nir"], "location", crs_epsg=32618,
        time_column="datetime", xy_chunksize=64,
    )
    location = gpd.read_parquet(index).location[0]
    times = xr.open_zarr(location)["time"].values
    assert len(times) == 2
    got = gpd.read_parquet(client.vectorize_mosaic(index, ["nir"], 120, xy_block_multiplier=2,
                                                   vector_crs=None))
    assert list(got.columns) == ["geometry", "label", "score_mean", "time"]
    assert sorted(got.time.unique()) == [pd.Timestamp(t) for t in times]
    for t, stamp in enumerate(times):
        nir, transform, nodata = band_of(location, "nir", t)
        fg = foreground(nir, 120, nodata)
        assert 1000 < fg.sum() < fg.size
        assert_same_polygons(got[got.time == pd.Timestamp(stamp)].geometry.values,
                             whole_raster_polygons(fg, transform, 4))


@pytest.mark.parametrize(
    "change, param, names",
    [
        (dict(features=["red", "nir"]), "features", "nir"),
        (dict(vectorize_config={"conectivity": 8}), "vectorize_config", "conectivity"),
        (dict(vectorize_config={"connectivity": 6}), "vectorize_config", "connectivity"),
        (dict(vectorize_config={"min_area": -1}), "vectorize_config", "min_area"),
        (dict(vector_crs="EPSG:999999"), "vector_crs", "EPSG:999999"),
        (dict(vector_crs="not a crs"), "vector_crs", "not a crs"),
        (dict(threshold=float("nan")), "threshold", "nan"),
        (dict(xy_block_multiplier=0), "xy_block_multiplier", "0"),
        (dict(store="/nonexistent/mosaic.zarr"), "store", "nonexistent"),
        (dict(store="/nonexistent/index.parquet"), "store", "nonexistent"),
    ],
)
def test_bad_input_names_the_parameter(client, landsat_index, output_root, change, param, names):
    kwargs = dict(store=landsat_index, features=["red"], threshold=THRESHOLD)
    with pytest.raises(InvalidParameterError) as err:
        client.vectorize_mosaic(**(kwargs | change))
    assert err.value.param == param and names in str(err.value)
    assert not (output_root / "vectorize-mosaic").exists()


def test_cli(tmp_path, landsat_index):
    (tmp_path / "rasterflow.yaml").write_text(f"output_uri: {tmp_path / 'out'}\nmax_workers: 2\n")
    result = CliRunner().invoke(app, [
        "vectorize-mosaic", landsat_index, "--feature", "red", "--threshold", "7000",
        "--vectorize-config", "connectivity=8", "--vectorize-config", "min_area=9000", "--vector-crs", "none",
        "--config", str(tmp_path / "rasterflow.yaml"),
    ])
    assert result.exit_code == 0, result.output
    (path,) = (tmp_path / "out").rglob("polygons.parquet")
    got = gpd.read_parquet(path)
    assert str(path) in result.output and got.crs.to_epsg() == 32621 and (got.area >= 9000).all()
    result = CliRunner().invoke(app, [
        "vectorize-mosaic", landsat_index, "--feature", "red", "--threshold", "7000",
        "--vectorize-config", "connectivity=6", "--config", str(tmp_path / "rasterflow.yaml"),
    ])
    assert result.exit_code == 2 and "vectorize_config" in result.output

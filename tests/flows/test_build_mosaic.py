"""build_mosaic end to end: a real STAC API (rustac serve), real GDAL, real Zarr, real Prefect."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import xarray as xr
from prefect_runs import task_states
from stac_fixtures import _free_port, expected_median, s2_grid_bounds, s2_items, stac_config, write_aoi

from rasterflow import RasterflowClient
from rasterflow.engine.build_mosaic.catalog import S2_MASKED_SCL
from rasterflow.engine.grid import Grid
from rasterflow.engine.warp import TileRead, render_window
from rasterflow.enums import DatasetEnum, ResamplingMethod
from rasterflow.errors import InputReadError, InvalidParameterError

S2_BANDS = ["B02", "B03", "B04", "B08"]
MARGIN = 500  # metres between the scenes' edge and the AOI (50 pixels at 10 m)


def _open(index_uri):
    index = gpd.read_parquet(index_uri)
    assert len(index) == 1
    return index, xr.open_zarr(index.location[0])["variables"]


@pytest.fixture(scope="module")
def s2_aoi(stac_sample, tmp_path_factory) -> str:
    x0, y0, x1, y1 = s2_grid_bounds(stac_sample)
    path = tmp_path_factory.mktemp("aoi") / "aoi.geojson"
    return write_aoi(path, (x0 + MARGIN, y0 + MARGIN, x1 - MARGIN, y1 - MARGIN), "EPSG:32621")


def test_several_datasets_yearly_slices_one_store(stac_api, stac_sample, s2_aoi, tmp_path):
    client = RasterflowClient(stac_config(stac_api, tmp_path / "out"))
    index_uri = client.build_mosaic(
        [DatasetEnum.S2_MED_WINDOWED_PIXEL, DatasetEnum.S2_MED_HARVEST], s2_aoi, "2021-01-01", "2022-12-31",
        crs_epsg=32621, xy_chunksize=64, shard_size_bytes=200_000,
    )
    index, data = _open(index_uri)
    assert index.workflow[0] == "build-mosaic"
    assert list(index.datasets[0]) == ["s2med_windowed_pixel", "s2med_harvest"]
    assert [str(t)[:10] for t in data.time.values] == ["2021-01-01", "2022-01-01"]
    assert list(data.band.values) == [f"s2med_windowed_pixel:{b}" for b in [*S2_BANDS, "N_VALID_PIXELS"]] + \
        [f"s2med_harvest:{b}" for b in [*S2_BANDS, "N_VALID_PIXELS"]]
    assert data.shape[2:] == (200, 200) and data.dtype == np.float32
    assert data.rio.transform().a == 10.0

    n = MARGIN // 10
    window = (slice(n, n + 200), slice(n, n + 200))
    usable = [it for it in s2_items(stac_sample) if it["properties"]["eo:cloud_cover"] < 75]
    for t, year in enumerate(("2021", "2022")):
        in_year = [it for it in usable if it["properties"]["datetime"].startswith(year)]
        # Iguazu, 25.5 S: southern temperate, harvest window March to May.
        harvest = [it for it in in_year if it["properties"]["datetime"][5:7] in ("03", "04", "05")]
        for prefix, items in (("s2med_windowed_pixel", in_year), ("s2med_harvest", harvest)):
            median, count = expected_median(items, S2_BANDS, S2_MASKED_SCL, window)
            got = data.isel(time=t).sel(band=[f"{prefix}:{b}" for b in S2_BANDS]).values
            np.testing.assert_array_equal(got, median.astype("float32"))
            np.testing.assert_array_equal(data.isel(time=t).sel(band=f"{prefix}:N_VALID_PIXELS").values,
                                          count)


def test_naip_most_recent_acquisition_on_top(stac_api, stac_sample, haiti, tmp_path):
    client = RasterflowClient(stac_config(stac_api, tmp_path / "out"))
    index_uri = client.build_mosaic([DatasetEnum.NAIP_60CM], str(haiti / "aoi.geojson"), "2018-01-01",
                                    "2019-12-31", crs_epsg=32618, resolution=5.0, xy_chunksize=64)
    _, data = _open(index_uri)
    assert data.dtype == np.uint8
    assert list(data.band.values) == ["naip_60cm:red", "naip_60cm:green", "naip_60cm:blue", "naip_60cm:nir"]
    transform = data.rio.transform()
    grid = Grid(crs=data.rio.crs.to_wkt(), transform=tuple(transform)[:6], width=data.sizes["x"],
                height=data.sizes["y"])
    folder = stac_sample["naip"]
    older, newer = (TileRead(uri=str(folder / n / "image.tif"), band_indexes=(1, 2, 3, 4), nodata=0)
                    for n in ("rgbn_subb", "rgbn_suba"))
    aoi = gpd.read_file(haiti / "aoi.geojson").to_crs(32618).geometry[0]
    as_of_2018 = render_window(grid, [older], "uint8", 0, ResamplingMethod.NEAREST, mask_geometry=aoi)
    as_of_2019 = render_window(grid, [older, newer], "uint8", 0, ResamplingMethod.NEAREST, mask_geometry=aoi)
    np.testing.assert_array_equal(data.isel(time=0).values, as_of_2018)
    np.testing.assert_array_equal(data.isel(time=1).values, as_of_2019)
    assert (as_of_2019 != render_window(grid, [newer, older], "uint8", 0, ResamplingMethod.NEAREST,
                                        mask_geometry=aoi)).any()

    # The same call again lands on the same store, every partition served from the cache.
    assert client.build_mosaic([DatasetEnum.NAIP_60CM], str(haiti / "aoi.geojson"), "2018-01-01",
                               "2019-12-31", crs_epsg=32618, resolution=5.0, xy_chunksize=64) == index_uri
    states = task_states("build-mosaic", "build-shard")
    assert states and set(states) == {"Cached"}


def test_nothing_found_fails_before_writing(stac_api, s2_aoi, tmp_path):
    client = RasterflowClient(stac_config(stac_api, tmp_path / "out"))
    with pytest.raises(InvalidParameterError,
                       match=r"s2med_windowed_pixel.*2024-01-01\.\.2024-12-31.*latest before: 2022-11-22"):
        client.build_mosaic([DatasetEnum.S2_MED_WINDOWED_PIXEL], s2_aoi, "2024-01-01", "2024-12-31")
    assert not list((tmp_path / "out").glob("build-mosaic/*/*.zarr"))


def test_season_outside_the_period_is_a_parameter_error(stac_api, s2_aoi, tmp_path):
    client = RasterflowClient(stac_config(stac_api, tmp_path / "out"))
    with pytest.raises(InvalidParameterError,
                       match=r"harvest window of s2med_harvest at latitude -25.*Mar 01"):
        client.build_mosaic([DatasetEnum.S2_MED_HARVEST], s2_aoi, "2021-06-01", "2021-08-31")


@pytest.mark.parametrize("threshold", [-1.0, float("nan"), float("inf")])
def test_a_bad_warp_error_threshold_is_named_before_anything_runs(stac_api, s2_aoi, tmp_path, threshold):
    client = RasterflowClient(stac_config(stac_api, tmp_path / "out"))
    with pytest.raises(InvalidParameterError, match="finite number of pixels, 0 or more") as err:
        client.build_mosaic([DatasetEnum.S2_MED_WINDOWED_PIXEL], s2_aoi, "2021-01-01", "2021-12-31",
                            warp_error_threshold=threshold)
    assert err.value.param == "warp_error_threshold"
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.zarr"))


def test_catalog_down_names_the_url(s2_aoi, tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"
    client = RasterflowClient(stac_config(url, tmp_path / "out"))
    with pytest.raises(InputReadError, match=rf"{url}: cannot search the STAC API"):
        client.build_mosaic([DatasetEnum.S2_MED_WINDOWED_PIXEL], s2_aoi, "2021-01-01", "2021-12-31")
    assert not (tmp_path / "out" / "build-mosaic").exists()

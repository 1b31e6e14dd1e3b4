"""Searching STAC sources: a real STAC API on loopback (rustac serve) and a stac-geoparquet file."""

from __future__ import annotations

import subprocess
from datetime import date

import pytest
from shapely.geometry import box
from stac_fixtures import _free_port, catalog_overrides, rustac_executable, s2_items

from rasterflow.config import DatasetSource
from rasterflow.engine.build_mosaic.catalog import CATALOG, EARTH_SEARCH, dataset_spec
from rasterflow.engine.build_mosaic.stac import search_dataset
from rasterflow.enums import DatasetEnum
from rasterflow.errors import InputReadError, InvalidParameterError

YEARS = [(2021, date(2021, 1, 1), date(2021, 12, 31)), (2022, date(2022, 1, 1), date(2022, 12, 31))]


@pytest.fixture(scope="module")
def area(stac_sample):
    """A box inside the Sentinel-2-like scenes' footprint (EPSG:4326)."""
    x0, y0, x1, y1 = s2_items(stac_sample)[0]["bbox"]
    dx, dy = (x1 - x0) / 4, (y1 - y0) / 4
    return box(x0 + dx, y0 + dy, x1 - dx, y1 - dy)


def _spec(dataset: DatasetEnum, url: str):
    return dataset_spec(dataset, catalog_overrides(url))


def test_search_gives_a_tile_index_per_year(stac_api, area, stac_sample):
    found = search_dataset(_spec(DatasetEnum.S2_MED_WINDOWED_PIXEL, stac_api), area, YEARS)
    assert sorted(found) == [2021, 2022]
    for year, frame in found.items():
        # six scenes a year, one of them 90 % cloudy (the limit is < 75 %)
        assert len(frame) == 5
        assert (frame["cloud_cover"] < 75).all()
        assert (frame["datetime"].dt.year == year).all()
        assert frame["datetime"].is_monotonic_increasing
        assert {"href:blue", "href:green", "href:red", "href:nir", "href:scl"} <= set(frame.columns)
    assert set(found[2021]["offset"]) == {0.0} and set(found[2021]["baseline"]) == {"03.01"}
    assert set(found[2022]["offset"]) == {-1000.0} and set(found[2022]["baseline"]) == {"04.00"}


def test_latest_rule_gives_each_year_everything_up_to_its_end(stac_api, stac_sample):
    import json

    items = json.loads((stac_sample["naip"] / "items.json").read_text())["features"]
    xs = [v for it in items for v in it["bbox"][0::2]]
    ys = [v for it in items for v in it["bbox"][1::2]]
    area = box(min(xs), min(ys), max(xs), max(ys))
    windows = [(y, date(y, 1, 1), date(y, 12, 31)) for y in (2018, 2019)]
    found = search_dataset(_spec(DatasetEnum.NAIP_60CM, stac_api), area, windows)
    assert [len(found[2018]), len(found[2019])] == [1, 2]
    assert list(found[2019]["datetime"].dt.year) == [2018, 2019]  # oldest first: the latest ends on top


def test_nothing_found_names_dataset_window_area_and_nearest_dates(stac_api, area):
    spec = _spec(DatasetEnum.S2_MED_HARVEST, stac_api)
    windows = [(2023, date(2023, 3, 1), date(2023, 5, 31))]
    with pytest.raises(InvalidParameterError) as info:
        search_dataset(spec, area, windows)
    message = str(info.value)
    assert info.value.param == "datasets"
    assert "s2med_harvest" in message and "2023-03-01..2023-05-31" in message and "harvest" in message
    assert f"{round(area.bounds[0], 5)}" in message
    assert "latest before: 2022-11-22" in message
    assert stac_api in message


def test_nothing_found_for_the_latest_rule_too(stac_api, area):
    """NAIP has no acquisition over the Sentinel-2 area."""
    with pytest.raises(InvalidParameterError, match=r"naip_30cm.*no usable scene over this area at any date"):
        search_dataset(_spec(DatasetEnum.NAIP_30CM, stac_api), area, YEARS)


def test_only_cloudy_scenes_is_an_error_saying_so(stac_api, area):
    spec = _spec(DatasetEnum.S2_MED_WINDOWED_PIXEL, stac_api)
    with pytest.raises(InvalidParameterError, match=r"1 item\(s\).*none usable \(eo:cloud_cover >= 75"):
        search_dataset(spec, area, [(2021, date(2021, 7, 1), date(2021, 7, 31))])


def test_catalog_down_names_the_url(area):
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    with pytest.raises(InputReadError) as info:
        search_dataset(_spec(DatasetEnum.S2_MED_WINDOWED_PIXEL, url), area, YEARS)
    assert info.value.uri == url and url in str(info.value)
    assert "s2med_windowed_pixel" in str(info.value) and info.value.transient


def test_stac_geoparquet_source_finds_what_the_api_finds(stac_api, stac_sample, area, tmp_path):
    parquet = tmp_path / "s2.parquet"
    subprocess.run([rustac_executable(), "translate", str(stac_sample["sentinel-2-l2a"] / "items.json"),
                    str(parquet)], check=True)
    sources = {DatasetEnum.S2_MED_WINDOWED_PIXEL: DatasetSource(geoparquet=str(parquet))}
    from_file = search_dataset(dataset_spec(DatasetEnum.S2_MED_WINDOWED_PIXEL, sources), area, YEARS)
    from_api = search_dataset(_spec(DatasetEnum.S2_MED_WINDOWED_PIXEL, stac_api), area, YEARS)
    for year in (2021, 2022):
        cols = ["id", "datetime", "offset", "href:blue", "href:scl"]
        assert from_file[year][cols].equals(from_api[year][cols])


def test_config_override_replaces_only_what_it_names():
    spec = dataset_spec(DatasetEnum.S2_MED_HARVEST, {DatasetEnum.S2_MED_HARVEST: DatasetSource(stac_url="http://m")})
    assert (spec.source.stac_url, spec.source.collection) == ("http://m", "sentinel-2-l2a")
    assert dataset_spec(DatasetEnum.S2_MED_HARVEST, {}) == CATALOG[DatasetEnum.S2_MED_HARVEST]
    assert CATALOG[DatasetEnum.S2_MED_HARVEST].source.stac_url == EARTH_SEARCH

"""Quicklook PNGs: sampled, stretched, nodata transparent, bounded in size; framed with a legend and a
scale bar."""

from __future__ import annotations

import base64
import re
import urllib.parse

import geopandas as gpd
import numpy as np
import pytest
from pictures import pixels
from shapely.geometry import box

from rasterflow.engine.grid import Grid
from rasterflow.engine.partitions import ShardShape, Window
from rasterflow.engine.publish.legend import data_uri, scale_bar, svg, value_text
from rasterflow.engine.publish.quicklook import polygons_png, polygons_quicklook, store_png, store_quicklook
from rasterflow.engine.store import StoreSpec, commit_store, create_store, write_window

GRID = Grid(crs="EPSG:32621", transform=(30.0, 0.0, 731430.0, 0.0, -30.0, -2791380.0), width=96, height=64)


def _store(tmp_path, bands: list[str], data: np.ndarray) -> str:
    spec = StoreSpec(uri=str(tmp_path / "s.zarr"), grid=GRID, bands=bands, times=[None], dtype="uint16",
                     nodata=0.0, shard=ShardShape(chunk=32, rows=64, cols=96))
    create_store(spec, "fp", {"workflow": "test"})
    write_window(spec.uri, 0, Window(row0=0, row1=64, col0=0, col1=96), data)
    commit_store(spec.uri)
    return spec.uri


def test_three_bands_are_rgb_sampled_to_max_size_with_nodata_transparent(tmp_path):
    data = np.ones((3, 64, 96), dtype="uint16")
    data[0, :, 48:] = 1000  # red on the right half
    data[1:, :, :48] = 500  # green + blue on the left half
    data[:, :16, :] = 0  # top rows nodata
    picture = pixels(store_png(_store(tmp_path, ["r", "g", "b"], data), max_size=32))

    assert picture.shape == (4, 22, 32)  # every 3rd pixel: ceil(64/3) x ceil(96/3)
    assert (picture[3, :6] == 0).all() and (picture[3, 6:] == 255).all()
    red, green = picture[:, 10, 20], picture[:, 10, 5]
    assert red[0] > 200 and red[1] < 50
    assert green[1] > 200 and green[0] < 50


def test_one_band_is_drawn_with_a_colour_ramp(tmp_path):
    data = np.tile(np.arange(1, 97, dtype="uint16"), (1, 64, 1))
    picture = pixels(store_png(_store(tmp_path, ["ndvi"], data)))

    assert picture.shape == (4, 64, 96)
    dark, bright = picture[:3, 0, 0].astype(int), picture[:3, 0, -1].astype(int)
    assert bright.sum() > dark.sum() + 200  # low values dark purple, high bright yellow
    assert dark[2] > dark[1]


def test_polygons_are_filled_on_a_transparent_ground(tmp_path):
    uri = str(tmp_path / "p.parquet")
    gpd.GeoDataFrame({"label": ["a", "b"]}, geometry=[box(0, 0, 4, 4), box(6, 6, 10, 10)],
                     crs="EPSG:4326").to_parquet(uri)
    picture = pixels(polygons_png(uri, max_size=100))

    assert picture.shape == (4, 100, 100)
    assert picture[3, 80, 20] == 255 and picture[3, 20, 80] == 255  # inside both squares (rows run south)
    assert picture[3, 20, 20] == 0 and picture[3, 50, 50] == 0  # between them


def test_no_polygons_give_an_empty_picture(tmp_path):
    uri = str(tmp_path / "p.parquet")
    gpd.GeoDataFrame({"label": []}, geometry=[], crs="EPSG:4326").to_parquet(uri)
    assert (pixels(polygons_png(uri))[3] == 0).all()


def test_a_quicklook_says_what_its_colours_mean_and_its_scale(tmp_path):
    data = np.tile(np.arange(1, 97, dtype="uint16"), (3, 64, 1))
    drawn = store_quicklook(_store(tmp_path, ["red", "green", "blue"], data))
    assert drawn.legend.kind == "rgb" and drawn.legend.names == ["red", "green", "blue"]
    low, high = drawn.legend.limits[0]
    assert (low, high) == (np.percentile(data[0], 2), np.percentile(data[0], 98))
    # 96 px of 30 m in UTM 21S: ~30 m on the ground per picture pixel (UTM's scale is within 0.1%).
    assert drawn.metres_per_pixel == pytest.approx(30, rel=2e-3)
    frame = svg(drawn)
    assert ">red<" in frame and ">blue<" in frame and ">2 km<" in frame  # the longest round length in 107 px
    assert pixels(base64.b64decode(re.search(r"base64,([^']+)'", frame).group(1))).shape == (4, 64, 96)
    uri = data_uri(frame)
    assert uri.startswith("data:image/svg+xml,") and not re.search(r"[\s()<>\"#]", uri)  # a markdown URL
    assert urllib.parse.unquote(uri.removeprefix("data:image/svg+xml,")) == frame


def test_a_probability_band_is_drawn_from_0_to_1(tmp_path):
    spec = StoreSpec(uri=str(tmp_path / "p.zarr"), grid=GRID, bands=["water"], times=[None], dtype="float32",
                     nodata=float("nan"), shard=ShardShape(chunk=32, rows=64, cols=96))
    create_store(spec, "fp", {"workflow": "test"})
    write_window(spec.uri, 0, Window(row0=0, row1=64, col0=0, col1=96),
                 np.full((1, 64, 96), 0.2, dtype="float32"))
    commit_store(spec.uri)
    drawn = store_quicklook(spec.uri)
    assert drawn.legend.kind == "ramp" and drawn.legend.limits == [(0.0, 1.0)]  # not stretched to 0.2-0.2
    assert ">water<" in svg(drawn) and ">0<" in svg(drawn) and ">1<" in svg(drawn)


def test_polygons_say_how_many_and_their_scale_in_degrees(tmp_path):
    uri = str(tmp_path / "p.parquet")
    gpd.GeoDataFrame({"label": ["a", "b"]}, geometry=[box(0, 0, 0.04, 0.04), box(0.06, 0.06, 0.1, 0.1)],
                     crs="EPSG:4326").to_parquet(uri)
    drawn = polygons_quicklook(uri, max_size=100, names=["water"])
    assert drawn.legend.count == 2 and ">2 polygons<" in svg(drawn) and ">water<" in svg(drawn)
    # 0.1 degree of longitude at 0.05 N: 11.13 km over 100 px.
    assert drawn.metres_per_pixel == pytest.approx(111.3, rel=1e-3)


def test_scale_bars_are_round_lengths():
    assert scale_bar(30.0, 107) == (pytest.approx(100 / 3 * 2), "2 km")  # 3.2 km fit: 2 km
    assert scale_bar(1.0, 150) == (100.0, "100 m")
    assert value_text(8200.3) == "8200" and value_text(0.123456) == "0.123" and value_text(12.5) == "12.5"

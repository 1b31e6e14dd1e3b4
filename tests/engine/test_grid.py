from __future__ import annotations

import pytest
import rasterio
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.warp import calculate_default_transform
from shapely.geometry import Point

from rasterflow.engine.grid import Grid, native_resolution, snapped_grid, utm_epsg


@pytest.fixture
def grid() -> Grid:
    return Grid(crs="EPSG:32621", transform=(30.0, 0.0, 731430.0, 0.0, -30.0, -2791380.0),
                width=200, height=100)


def _source(path):
    with rasterio.open(path) as src:
        return src.crs.to_wkt(), tuple(src.transform)[:6], src.width, src.height


def _gdal_res(path, dst_crs):
    with rasterio.open(path) as src:
        t, _, _ = calculate_default_transform(src.crs, dst_crs, src.width, src.height, *src.bounds)
    return t.a, -t.e


def test_res_and_bounds(grid):
    assert grid.res == (30.0, 30.0)
    assert grid.bounds == (731430.0, -2791380.0 - 100 * 30, 731430.0 + 200 * 30, -2791380.0)


def test_window(grid):
    sub = grid.window(10, 30, 50, 120)
    assert (sub.width, sub.height) == (70, 20)
    assert sub.crs == grid.crs
    assert sub.res == grid.res
    assert sub.transform == (30.0, 0.0, 731430.0 + 50 * 30, 0.0, -30.0, -2791380.0 - 10 * 30)
    assert sub.bounds == (731430.0 + 1500, -2791380.0 - 900, 731430.0 + 3600, -2791380.0 - 300)


def test_whole_window_is_the_grid(grid):
    assert grid.window(0, grid.height, 0, grid.width) == grid


def test_snapped_grid_snaps_outward():
    g = snapped_grid((101.5, 203.2, 148.7, 299.9), (10.0, 10.0), "EPSG:3857")
    assert g.bounds == (100.0, 200.0, 150.0, 300.0)
    assert (g.width, g.height) == (5, 10)
    assert g.transform == (10.0, 0.0, 100.0, 0.0, -10.0, 300.0)


def test_snapped_grid_negative_coordinates_and_rectangular_pixels():
    g = snapped_grid((-15.5, -25.1, -4.9, -5.0), (10.0, 20.0), "EPSG:3857")
    assert g.bounds == (-20.0, -40.0, 0.0, 0.0)
    assert (g.width, g.height) == (2, 2)
    assert g.res == (10.0, 20.0)


@pytest.mark.parametrize(
    "bounds, res, shape",
    [
        ((100.0, 200.0, 150.0, 300.0), (10.0, 10.0), (5, 10)),
        ((600000.0, 2040000.0, 600600.0, 2050000.0), (5.0, 5.0), (120, 2000)),
        ((-6089475.0, -2902509.0, -6067000.0, -2883000.0), (0.5, 0.25), (44950, 78036)),
        # 0.1 * 3 == 0.30000000000000004: float noise must not grow a pixel.
        ((0.0, 0.0, 0.1 * 3, 0.7), (0.1, 0.1), (3, 7)),
    ],
)
def test_snapped_grid_on_grid_bounds_do_not_grow(bounds, res, shape):
    g = snapped_grid(bounds, res, "EPSG:3857")
    assert (g.width, g.height) == shape
    assert g.bounds == pytest.approx(bounds, abs=1e-9)


def test_snapped_grid_point_bounds_give_one_pixel():
    g = snapped_grid((105.0, 205.0, 105.0, 205.0), (10.0, 10.0), "EPSG:3857")
    assert (g.width, g.height) == (1, 1)
    assert g.bounds == (100.0, 200.0, 110.0, 210.0)


@pytest.mark.parametrize("dst", ["EPSG:3857", "EPSG:4326", "EPSG:32721"])
def test_native_resolution_one_tile_matches_gdal(landsat_tile, dst):
    res = native_resolution([_source(landsat_tile)], CRS.from_user_input(dst))
    assert res == _gdal_res(landsat_tile, dst)


def test_native_resolution_same_crs_is_source_resolution(landsat_tile):
    assert native_resolution([_source(landsat_tile)], CRS.from_epsg(32621)) == pytest.approx((30.0, 30.0))


def test_native_resolution_is_per_axis_minimum(landsat_tiles, haiti_tiles):
    paths = [*landsat_tiles, *haiti_tiles]
    dst = CRS.from_epsg(3857)
    each = [_gdal_res(p, dst) for p in paths]
    expected = (min(r[0] for r in each), min(r[1] for r in each))
    assert native_resolution([_source(p) for p in paths], dst) == expected
    # The Haiti tiles (5 m) are finer than Landsat (30 m) on both axes.
    assert expected[0] < 10 and expected[1] < 10


def test_native_resolution_landsat_tiles(landsat_tiles):
    dst = CRS.from_epsg(4326)
    each = [_gdal_res(p, dst) for p in landsat_tiles]
    assert native_resolution([_source(p) for p in landsat_tiles], dst) == (
        min(r[0] for r in each),
        min(r[1] for r in each),
    )


@pytest.mark.parametrize(
    "g",
    [
        Grid(crs="EPSG:32621", transform=(30.0, 0.0, 731430.0, 0.0, -30.0, -2791380.0),
             width=646, height=546),
        Grid(crs="EPSG:3857", transform=(33.2, 0.0, -6089475.5, 0.0, -33.2, -2902509.3),
             width=655, height=560),
        Grid(crs="EPSG:32618", transform=(5.0, 0.0, 792928.0, 0.0, -5.0, 2050112.0),
             width=276, height=212),
    ],
    ids=["utm21s", "webmercator", "utm18n"],
)
def test_footprint_contains_centre(g):
    minx, miny, maxx, maxy = g.bounds
    to_lonlat = Transformer.from_crs(g.crs, "EPSG:4326", always_xy=True)
    lon, lat = to_lonlat.transform((minx + maxx) / 2, (miny + maxy) / 2)
    footprint = g.footprint()
    assert footprint.is_valid
    assert footprint.contains(Point(lon, lat))
    # Plausible lon/lat extent, not projected metres.
    fminx, fminy, fmaxx, fmaxy = footprint.bounds
    assert -180 <= fminx < fmaxx <= 180 and -90 <= fminy < fmaxy <= 90


def test_footprint_in_own_crs_is_bounds(grid):
    assert grid.footprint(grid.crs).bounds == pytest.approx(grid.bounds)


@pytest.mark.parametrize(("lon", "lat", "epsg"), [
    (-100.9, 37.5, 32614),   # Haskell County, Kansas
    (-54.5, -25.4, 32721),   # Iguazu
    (179.9, 10.0, 32660),
    (-180.0, -10.0, 32701),
])
def test_utm_zone_of_a_point(lon, lat, epsg):
    assert utm_epsg(lon, lat) == epsg

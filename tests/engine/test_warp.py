from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.warp import calculate_default_transform, transform_bounds
from shapely.geometry import Point

from rasterflow.engine.grid import Grid, snapped_grid
from rasterflow.engine.warp import TileRead, render_window
from rasterflow.enums import ResamplingMethod
from rasterflow.errors import InputReadError

NEAREST = ResamplingMethod.NEAREST


def _read(path):
    with rasterio.open(path) as src:
        grid = Grid(crs=src.crs.to_wkt(), transform=tuple(src.transform)[:6], width=src.width,
                    height=src.height)
        return grid, src.read(), src.nodata


def _tile(path, bands=None):
    with rasterio.open(path) as src:
        return TileRead(uri=str(path), band_indexes=tuple(bands or range(1, src.count + 1)),
                        nodata=src.nodata)


def _render(grid, tiles, **kwargs):
    kwargs = {"dtype": "uint16", "nodata": 0, "resampling": NEAREST} | kwargs
    return render_window(grid, tiles, **kwargs)


@pytest.fixture(scope="module")
def web_mercator_grid(landsat_tile) -> Grid:
    """The Landsat tile's footprint on a grid in EPSG:3857 at GDAL's suggested resolution."""
    with rasterio.open(landsat_tile) as src:
        t, _, _ = calculate_default_transform(src.crs, "EPSG:3857", src.width, src.height, *src.bounds)
        bounds = transform_bounds(src.crs, "EPSG:3857", *src.bounds)
    return snapped_grid(bounds, (t.a, -t.e), "EPSG:3857")


@pytest.mark.parametrize("which", ["landsat", "haiti"])
def test_own_grid_nearest_is_identity(landsat_tile, haiti_tiles, which):
    path = landsat_tile if which == "landsat" else haiti_tiles[1]
    grid, pixels, nodata = _read(path)
    out = _render(grid, [_tile(path)], dtype=str(pixels.dtype), nodata=nodata)
    assert out.dtype == pixels.dtype
    np.testing.assert_array_equal(out, pixels)


def test_band_order_follows_band_indexes(haiti_tiles):
    grid, pixels, _ = _read(haiti_tiles[0])
    out = _render(grid, [_tile(haiti_tiles[0], bands=(4, 1))], dtype="uint8")
    np.testing.assert_array_equal(out, pixels[[3, 0]])


def test_window_of_own_grid(landsat_tile):
    grid, pixels, _ = _read(landsat_tile)
    out = _render(grid.window(100, 250, 300, 646), [_tile(landsat_tile)])
    np.testing.assert_array_equal(out, pixels[:, 100:250, 300:646])


def test_no_tiles_gives_empty_band_axis(landsat_tile):
    grid, _, _ = _read(landsat_tile)
    assert _render(grid.window(0, 4, 0, 5), []).shape == (0, 4, 5)


def test_pixels_outside_every_tile_are_nodata(landsat_tile):
    grid, _, _ = _read(landsat_tile)
    beside = grid.window(0, 20, grid.width + 10, grid.width + 30)  # 10 px east of the tile
    out = _render(beside, [_tile(landsat_tile)], nodata=65535)
    assert (out == 65535).all()


def test_output_nodata_replaces_source_nodata(haiti_tiles):
    """rgbn_suba holds pixels equal to its nodata (0); they come out as the output nodata."""
    grid, pixels, _ = _read(haiti_tiles[0])
    holes = (pixels == 0).all(axis=0)
    assert holes.any()
    out = _render(grid, [_tile(haiti_tiles[0])], dtype="uint16", nodata=999)
    assert (out[:, holes] == 999).all()
    np.testing.assert_array_equal(out[:, ~holes], pixels[:, ~holes])


def test_last_tile_wins(haiti_tiles):
    """The Haiti tiles overlap on grids offset by a fraction of a pixel, so their overlap differs."""
    grid, _, _ = _read(haiti_tiles[0])
    a, b = (_tile(p) for p in haiti_tiles)
    only_a, only_b = _render(grid, [a], dtype="uint8"), _render(grid, [b], dtype="uint8")
    overlap = (only_a != 0).all(axis=0) & (only_b != 0).all(axis=0)
    assert overlap.sum() > 1000
    assert (only_a[:, overlap] != only_b[:, overlap]).any()

    a_then_b = _render(grid, [a, b], dtype="uint8")
    b_then_a = _render(grid, [b, a], dtype="uint8")
    np.testing.assert_array_equal(a_then_b[:, overlap], only_b[:, overlap])
    np.testing.assert_array_equal(b_then_a[:, overlap], only_a[:, overlap])
    np.testing.assert_array_equal(a_then_b, np.where(only_b != 0, only_b, only_a))
    np.testing.assert_array_equal(b_then_a, np.where(only_a != 0, only_a, only_b))


def test_nodata_of_later_tile_does_not_overwrite(haiti_tiles, tmp_path):
    grid, _, _ = _read(haiti_tiles[0])
    a = _tile(haiti_tiles[0])
    only_a = _render(grid, [a], dtype="uint8")
    holed = tmp_path / "subb_with_hole.tif"
    with rasterio.open(haiti_tiles[1]) as src:
        profile, pixels = src.profile, src.read()
    pixels[:, 10:60, 20:90] = 0  # a hole of nodata inside the overlap with rgbn_suba
    with rasterio.open(holed, "w", **(profile | {"driver": "GTiff"})) as dst:
        dst.write(pixels)
    b = _tile(holed)
    whole_b = _render(grid, [_tile(haiti_tiles[1])], dtype="uint8")
    holed_b = _render(grid, [b], dtype="uint8")
    hole = (whole_b != 0).all(axis=0) & (holed_b == 0).all(axis=0) & (only_a != 0).all(axis=0)
    assert hole.sum() > 1000

    out = _render(grid, [a, b], dtype="uint8")
    np.testing.assert_array_equal(out[:, hole], only_a[:, hole])


def test_mask_geometry_sets_outside_to_nodata(landsat_tile):
    grid, pixels, _ = _read(landsat_tile)
    minx, miny, maxx, maxy = grid.bounds
    circle = Point(minx + 0.4 * (maxx - minx) + 7.3,
                   miny + 0.55 * (maxy - miny) + 3.1).buffer(0.3 * (maxy - miny))
    out = _render(grid, [_tile(landsat_tile)], mask_geometry=circle)

    a = grid.affine
    cols, rows = np.meshgrid(np.arange(grid.width) + 0.5, np.arange(grid.height) + 0.5)
    inside = shapely.contains_xy(circle, a.c + a.a * cols, a.f + a.e * rows)
    assert 0 < inside.sum() < inside.size
    assert (out[:, ~inside] == 0).all()
    np.testing.assert_array_equal(out[:, inside], pixels[:, inside])


def test_missing_tile_raises_input_read_error(landsat_tile, tmp_path):
    grid, _, _ = _read(landsat_tile)
    missing = TileRead(uri=str(tmp_path / "gone.tif"), band_indexes=(1,), nodata=0)
    with pytest.raises(InputReadError, match="does not exist") as info:
        _render(grid.window(0, 8, 0, 8), [_tile(landsat_tile, bands=(1,)), missing])
    assert not info.value.transient


@pytest.mark.parametrize("error_threshold", [0.125, 0])
@pytest.mark.parametrize("resampling", [NEAREST, ResamplingMethod.BILINEAR])
def test_reprojected_render_is_independent_of_windows(landsat_tile, web_mercator_grid, error_threshold,
                                                      resampling):
    """Windows given with their origin warp on the grid's fixed lattice: GDAL's approximate
    transformer interpolates along the same block rows whatever the windows."""
    grid, tiles = web_mercator_grid, [_tile(landsat_tile)]
    kwargs = dict(error_threshold=error_threshold, resampling=resampling)
    whole = _render(grid, tiles, **kwargs)
    r, c = 137, 211
    stitched = np.empty_like(whole)
    for r0, r1 in ((0, r), (r, grid.height)):
        for c0, c1 in ((0, c), (c, grid.width)):
            stitched[:, r0:r1, c0:c1] = _render(grid.window(r0, r1, c0, c1), tiles, origin=(r0, c0), **kwargs)
    assert (whole != 0).any(axis=0).mean() > 0.9
    np.testing.assert_array_equal(stitched, whole)


def test_approximate_transform_differs_from_exact_by_little(landsat_tile, web_mercator_grid):
    """GDAL's default threshold (0.125 px) moves a nearest pick at most to a neighbouring source
    pixel, where a pixel centre lies that close to a source pixel edge: at this native resolution
    about 5% of pixels (0.45% of the 3x finer benchmark grid)."""
    grid, tiles = web_mercator_grid, [_tile(landsat_tile)]
    exact = _render(grid, tiles, error_threshold=0)
    approximate = _render(grid, tiles)
    differ = (exact != approximate).any(axis=0)
    assert 0 < differ.mean() < 0.06
    # Each differing pixel holds one of the 3 x 3 source pixels around its exact source position.
    src_grid, pixels, _ = _read(landsat_tile)
    rows, cols = np.nonzero(differ)
    a, s = grid.affine, src_grid.affine
    x, y = Transformer.from_crs(grid.crs, src_grid.crs, always_xy=True).transform(
        a.c + a.a * (cols + 0.5), a.f + a.e * (rows + 0.5))
    src_col, src_row = np.floor((x - s.c) / s.a).astype(int), np.floor((y - s.f) / s.e).astype(int)
    padded = np.pad(pixels, ((0, 0), (1, 1), (1, 1)))
    neighbours = np.stack([padded[:, src_row + 1 + dr, src_col + 1 + dc]
                           for dr in (-1, 0, 1) for dc in (-1, 0, 1)])
    assert (neighbours == approximate[:, rows, cols][None]).all(axis=1).any(axis=0).all()


def test_reprojected_nearest_matches_proj_per_pixel(landsat_tile, web_mercator_grid):
    """Reference: each destination pixel centre to the source CRS with PROJ
    (pyproj), floored to the source pixel, that pixel read (nodata outside)."""
    grid = web_mercator_grid
    src_grid, pixels, _ = _read(landsat_tile)
    out = _render(grid, [_tile(landsat_tile)], error_threshold=0)

    a, s = grid.affine, src_grid.affine
    cols, rows = np.meshgrid(np.arange(grid.width) + 0.5, np.arange(grid.height) + 0.5)
    to_src = Transformer.from_crs(grid.crs, src_grid.crs, always_xy=True)
    x, y = to_src.transform(a.c + a.a * cols, a.f + a.e * rows)
    src_col = np.floor((x - s.c) / s.a).astype(int)
    src_row = np.floor((y - s.f) / s.e).astype(int)
    inside = (src_col >= 0) & (src_col < src_grid.width) & (src_row >= 0) & (src_row < src_grid.height)
    expected = np.zeros_like(out)
    expected[:, inside] = pixels[:, src_row[inside], src_col[inside]]

    assert inside.mean() > 0.9
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("res, col_off, row_off", [(30, -5, 400), (10, 7, -11), (10, -40, 25),
                                                   (15, 3, -5), (5, -1, 2)])
@pytest.mark.parametrize("dtype, nodata", [("uint16", 0), ("float32", float("nan"))])
def test_read_aligned_equals_the_warp(landsat_tile, res, col_off, row_off, dtype, nodata):
    """Grids whose pixels divide the tile's, edges on its edges, some partly outside it."""
    from rasterflow.engine.warp import read_aligned

    with rasterio.open(landsat_tile) as src:
        t = src.transform
        grid = Grid(crs=src.crs.to_wkt(),
                    transform=(res, 0.0, t.c + col_off * res, 0.0, -res, t.f - row_off * res),
                    width=300, height=200)
    tile = _tile(landsat_tile)
    got = read_aligned(grid, tile, dtype, nodata)
    expected = _render(grid, [tile], dtype=dtype, nodata=nodata, error_threshold=0)
    np.testing.assert_array_equal(got, expected)
    assert (np.isnan(got) if dtype == "float32" else got == 0).any()  # reaches past the tile's edge


def test_read_aligned_declines_what_needs_a_warp(landsat_tile, web_mercator_grid):
    from rasterflow.engine.warp import read_aligned

    with rasterio.open(landsat_tile) as src:
        t, crs = src.transform, src.crs.to_wkt()
    tile = _tile(landsat_tile)
    shifted = Grid(crs=crs, transform=(10.0, 0.0, t.c + 5, 0.0, -10.0, t.f), width=50, height=50)
    coarser = Grid(crs=crs, transform=(45.0, 0.0, t.c, 0.0, -45.0, t.f), width=50, height=50)
    for grid in (web_mercator_grid, shifted, coarser):
        assert read_aligned(grid, tile, "uint16", 0) is None

"""Map layers and tiles from the engine alone: real stores and pyramids of the Landsat sample."""

from __future__ import annotations

import numpy as np
import pytest
import view_fixtures
import zarr
from affine import Affine
from pictures import pixels
from rasterio.transform import from_bounds
from rasterio.warp import Resampling, reproject

from rasterflow.engine.view.layers import layers_of
from rasterflow.engine.view.tiles import TILE_SIZE, TMS, TileSource
from rasterflow.engine.view.vectors import geojson, mbtiles, vector_tile
from rasterflow.errors import InvalidParameterError


@pytest.fixture(scope="module")
def stores(landsat, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("view")
    mosaic = view_fixtures.mosaic(landsat, tmp / "mosaic")
    return {"mosaic": mosaic, "pyramid": view_fixtures.pyramid(mosaic, tmp / "pyramid"),
            "polygons": view_fixtures.polygons(landsat, tmp / "polygons.parquet")}


def test_a_pyramid_is_one_layer_with_its_levels_and_limits_from_its_statistics(stores):
    layer, = layers_of(stores["pyramid"])
    stats = zarr.open_group(stores["pyramid"], mode="r").attrs["bands"]

    assert layer.limits_from == "statistics" and len(layer.levels) >= 2
    assert [b.name for b in layer.bands] == view_fixtures.BANDS
    for band, entry in zip(layer.bands, stats, strict=True):
        stats = entry["statistics"]
        assert (band.low, band.high) == (stats["percentile_2"], stats["percentile_98"])
    resolutions = [lvl.resolution for lvl in layer.levels]
    assert resolutions == sorted(resolutions) and resolutions[1] == 2 * resolutions[0]
    assert layer.minzoom < layer.maxzoom and layer.times == ["undated"]
    west, south, east, north = layer.bounds
    assert -55 < west < east < -54 and -26 < south < north < -25


def test_a_store_without_statistics_is_stretched_from_a_sample(stores):
    layer, = layers_of(stores["mosaic"])
    assert layer.limits_from == "sample" and len(layer.levels) == 1
    assert all(5000 < b.low < b.high < 30000 for b in layer.bands)


def test_polygons_are_a_vector_layer_and_anything_else_is_refused(stores, tmp_path):
    layer, = layers_of(stores["polygons"])
    assert layer.kind == "vector" and layer.labels == ["water"] and layer.polygons == 3
    assert b'"label": "water"' in geojson(layer)
    (tmp_path / "notes.txt").write_text("not a map")
    with pytest.raises(InvalidParameterError, match="neither a Zarr group nor a GeoParquet"):
        layers_of(str(tmp_path / "notes.txt"))
    with pytest.raises(InvalidParameterError, match="does not exist"):
        layers_of(str(tmp_path / "missing.parquet"))


def test_many_polygons_become_vector_tiles_that_debian_gdal_reads(stores, tmp_path):
    layer, = layers_of(stores["polygons"])
    archive = mbtiles(layer, tmp_path)
    assert mbtiles(layer, tmp_path) == archive  # made once
    z = 12
    found = [t for t in TMS.tiles(*layer.bounds, zooms=[z]) if vector_tile(archive, t.z, t.x, t.y)]
    assert found and vector_tile(archive, z, 0, 0) is None
    assert vector_tile(archive, found[0].z, found[0].x, found[0].y)[:2] == b"\x1f\x8b"  # gzipped MVT


def _expected_tile(layer, level: int, tile) -> np.ndarray:
    """GDAL's nearest-neighbour warp of the whole level onto the tile: what the tile must show."""
    lvl = layer.levels[level]
    data = zarr.open_array(lvl.uri, path="variables", mode="r")[0]
    out = np.zeros((data.shape[0], TILE_SIZE, TILE_SIZE), dtype=data.dtype)
    reproject(np.asarray(data), out, src_transform=Affine(*lvl.transform), src_crs=layer.crs, src_nodata=0,
              dst_transform=from_bounds(*TMS.xy_bounds(tile), TILE_SIZE, TILE_SIZE), dst_crs=TMS.rasterio_crs,
              dst_nodata=0, resampling=Resampling.nearest)
    return out


def test_a_tile_shows_the_levels_pixels_where_gdal_puts_them(stores):
    layer, = layers_of(stores["pyramid"])
    source = TileSource(layer)
    z = layer.maxzoom - 2
    tiles = list(TMS.tiles(*layer.bounds, zooms=[z]))
    tile = tiles[len(tiles) // 2]
    picture = pixels(source.tile(tile.z, tile.x, tile.y, 0, [0, 1, 2]))
    level = source.level_for(source_bounds(source, tile))
    expected = _expected_tile(layer, level, tile)

    assert picture.shape == (4, TILE_SIZE, TILE_SIZE)
    np.testing.assert_array_equal(picture[3] == 255, (expected != 0).any(axis=0))  # nodata transparent
    low, high = layer.bands[0].low, layer.bands[0].high
    red = np.clip((expected[0].astype(float) - low) / (high - low) * 255, 0, 255)
    shown = picture[3] == 255
    assert np.abs(picture[0][shown] - red[shown]).max() <= 1  # stretched to the statistics' limits


def source_bounds(source, tile):
    from rasterio.warp import transform_bounds

    return transform_bounds(TMS.rasterio_crs, source.crs, *TMS.xy_bounds(tile), densify_pts=21)


def test_zoomed_out_tiles_read_a_coarser_level(stores):
    layer, = layers_of(stores["pyramid"])
    source = TileSource(layer)
    levels = {z: source.level_for(source_bounds(source, next(iter(TMS.tiles(*layer.bounds, zooms=[z])))))
              for z in range(layer.minzoom, layer.maxzoom + 1)}
    assert levels[layer.maxzoom] == 0 and levels[layer.minzoom] == len(layer.levels) - 1
    assert list(levels.values()) == sorted(levels.values(), reverse=True)
    # The chosen level's pixel is never coarser than the tile's.
    for z, level in levels.items():
        tile_pixel = (TMS.xy_bounds(next(iter(TMS.tiles(*layer.bounds, zooms=[z])))).right
                      - TMS.xy_bounds(next(iter(TMS.tiles(*layer.bounds, zooms=[z])))).left) / TILE_SIZE
        assert layer.levels[level].resolution <= tile_pixel * 1.01 or level == 0


def test_a_tile_outside_the_store_is_empty_and_one_band_uses_its_ramp(stores):
    layer, = layers_of(stores["pyramid"])
    source = TileSource(layer)
    assert source.tile(layer.maxzoom, 0, 0, 0, [0]) is None
    tiles = list(TMS.tiles(*layer.bounds, zooms=[layer.maxzoom - 1]))
    picture = pixels(source.tile(tiles[len(tiles) // 2].z, tiles[len(tiles) // 2].x, tiles[len(tiles) // 2].y,
                                 0, [2]))
    shown = picture[:3][:, picture[3] == 255].T
    assert len(shown) and (shown[:, 0] != shown[:, 2]).mean() > 0.9  # viridis, not grey

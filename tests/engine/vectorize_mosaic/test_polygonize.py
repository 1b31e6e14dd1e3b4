"""Block polygonize + merge against GDAL on the whole raster, no Prefect.

The raster is real: the Landsat sample mosaicked by the engine (UTM 21N,
30 m), its red band thresholded at levels that give the large land masses
around the Itaipu reservoir (hundreds of thousands of pixels, crossing many
blocks), thin shores and thousands of single-pixel specks.
"""

from __future__ import annotations

import functools
import json
import math

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
from polygon_reference import assert_same_polygons, foreground, whole_raster_polygons
from rasterio.features import rasterize
from shapely.geometry import LineString

from rasterflow.engine.grid import Grid
from rasterflow.engine.partitions import ShardShape
from rasterflow.engine.store import StoreSpec, create_store
from rasterflow.engine.vectorize_mosaic.group import polygonize_group
from rasterflow.engine.vectorize_mosaic.merge import MergeSummary, ResultWriter, merge_parts, merge_tables
from rasterflow.engine.vectorize_mosaic.parts import Finisher
from rasterflow.engine.vectorize_mosaic.plan import (
    VectorizeSettings,
    block_windows,
    create_output,
    plan_vectorize,
)
from rasterflow.engine.vectorize_mosaic.polygonize import polygonize_array
from rasterflow.engine.vectorize_mosaic.seams import _touching
from rasterflow.errors import InvalidParameterError
from rasterflow.params import VectorizeMosaicParams

# Red DN of the sample: 6215 keeps three land masses of ~10^5..10^6 pixels and
# ~2000 specks, 6271 splits them into a dozen large pieces, 6711 keeps fields
# and towns.
THRESHOLDS = [6215, 6711]


@pytest.fixture(scope="module")
def reference(raster):
    """Whole-raster GDAL polygons of the red band, per (threshold, connectivity), computed once."""
    values, grid, nodata = raster
    return functools.cache(
        lambda threshold, connectivity: whole_raster_polygons(foreground(values[0], threshold, nodata),
                                                              grid.affine, connectivity)
    )


def settings_for(grid: Grid, threshold: float, connectivity: int = 4, **changes) -> VectorizeSettings:
    values = dict(features=["red"], threshold=threshold, connectivity=connectivity, stats=True, min_area=0.0,
                  simplify_tolerance=0.0, output_crs=grid.crs, with_time=False)
    return VectorizeSettings(**(values | changes))


def vectorize_in_blocks(values, grid, nodata, settings, block, path) -> gpd.GeoDataFrame:
    """The engine's block path on an array: polygonize each block, then merge."""
    finisher = Finisher(grid, settings)
    height, width = values.shape[-2:]
    parts = [
        polygonize_array(values[:, w.row0 : w.row1, w.col0 : w.col1], w, (height, width),
                         nodata, settings, finisher)
        for w in block_windows(height, width, *block)
    ]
    writer = ResultWriter(settings, {}, str(path))
    merge_tables(parts, [finisher], settings, writer)
    writer.close()
    return gpd.read_parquet(path)


def crop(values, grid: Grid, row0, row1, col0, col1):
    return values[..., row0:row1, col0:col1], grid.window(row0, row1, col0, col1)


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_blocks_equal_whole_raster(raster, reference, tmp_path, connectivity, threshold):
    """Odd, non-square blocks (23 x 37 px), so no seam sits on a pattern of the image."""
    values, grid, nodata = raster
    red = values[:1]
    settings = settings_for(grid, threshold, connectivity)
    got = vectorize_in_blocks(red, grid, nodata, settings, (23, 37), tmp_path / "p.parquet")
    fg = foreground(red[0], threshold, nodata)
    assert_same_polygons(got.geometry.values, reference(threshold, connectivity))
    assert got.is_valid.all()
    assert got.area.sum() == fg.sum() * 900.0
    # MultiPolygons only for corner contacts, and the file's GeoParquet metadata says what it holds.
    assert set(got.geom_type) == ({"Polygon"} if connectivity == 4 else {"Polygon", "MultiPolygon"})
    assert geometry_types(tmp_path / "p.parquet") == sorted(set(got.geom_type))
    assert fg.sum() > 150_000 and len(got) > 1000  # not a vacuous match


def geometry_types(path) -> list[str]:
    """``geometry_types`` of a GeoParquet file's metadata, as readers see it."""
    return json.loads(pq.read_schema(path).metadata[b"geo"])["columns"]["geometry"]["geometry_types"]


def test_geometry_types_list_what_the_file_holds(tmp_path):
    """8-connectivity can make MultiPolygons; where no corner joins regions, the file says Polygon."""
    grid = Grid(crs="EPSG:32621", transform=(30.0, 0.0, 731430.0, 0.0, -30.0, -2791380.0), width=40,
                height=30)
    values = np.zeros((1, 30, 40), dtype="uint16")
    values[0, 5:12, 5:15] = values[0, 18:25, 20:35] = 9  # two blobs, nowhere touching
    settings = settings_for(grid, 5, connectivity=8)
    got = vectorize_in_blocks(values, grid, 0.0, settings, (16, 16), tmp_path / "blobs.parquet")
    assert len(got) == 2 and geometry_types(tmp_path / "blobs.parquet") == ["Polygon"]
    values[0, 12, 15] = 9  # a pixel touching the first blob's corner only: GDAL's corner contact
    got = vectorize_in_blocks(values, grid, 0.0, settings, (16, 16), tmp_path / "corner.parquet")
    assert geometry_types(tmp_path / "corner.parquet") == sorted(set(got.geom_type)) == ["MultiPolygon",
                                                                                         "Polygon"]
    assert gpd.read_parquet(tmp_path / "corner.parquet").crs.to_epsg() == 32621


@pytest.mark.parametrize("connectivity", [4, 8])
def test_without_stats_equals_whole_raster(raster, reference, tmp_path, connectivity):
    """Without stats GDAL polygonizes the mask itself (no labels): edge runs find their pieces by pixel
    centre."""
    values, grid, nodata = raster
    red = values[:1]
    settings = settings_for(grid, 6271, connectivity, stats=False)
    got = vectorize_in_blocks(red, grid, nodata, settings, (23, 37), tmp_path / "p.parquet")
    assert_same_polygons(got.geometry.values, reference(6271, connectivity))
    assert got.is_valid.all() and got.area.sum() == foreground(red[0], 6271, nodata).sum() * 900.0
    assert "score_mean" not in got.columns


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("threshold", [6215, 6271])
def test_16_px_blocks(raster, tmp_path, connectivity, threshold):
    """Blocks much smaller than the objects: a shore and a town cut into 16 px blocks."""
    values, grid, nodata = raster
    red, sub = crop(values[:1], grid, 400, 656, 0, 320)
    got = vectorize_in_blocks(red, sub, nodata, settings_for(sub, threshold, connectivity), (16, 16),
                              tmp_path / "p.parquet")
    fg = foreground(red[0], threshold, nodata)
    assert_same_polygons(got.geometry.values, whole_raster_polygons(fg, sub.affine, connectivity))
    assert got.is_valid.all()
    assert got.area.sum() == fg.sum() * 900.0


@pytest.mark.parametrize("connectivity", [4, 8])
def test_no_edge_along_a_block_border_unless_the_raster_has_one(raster, tmp_path, connectivity):
    """Along every interior block line, polygon edges are exactly where foreground meets background."""
    values, grid, nodata = raster
    red, sub = crop(values[:1], grid, 0, 400, 0, 400)
    block = 32
    settings = settings_for(sub, 6271, connectivity)
    got = vectorize_in_blocks(red, sub, nodata, settings, (block, block), tmp_path / "p.parquet")
    fg = foreground(red[0], 6271, nodata)
    boundary = shapely.union_all(shapely.boundary(got.geometry.values))
    a = sub.affine
    for k in range(block, 400, block):
        row_line = LineString([a * (0, k), a * (400, k)])
        col_line = LineString([a * (k, 0), a * (k, 400)])
        assert shapely.intersection(boundary, row_line).length == (fg[k - 1] != fg[k]).sum() * 30.0
        assert shapely.intersection(boundary, col_line).length == (fg[:, k - 1] != fg[:, k]).sum() * 30.0


@pytest.mark.parametrize("connectivity", [4, 8])
def test_score_mean_is_the_mean_over_each_polygons_pixels(raster, tmp_path, connectivity):
    values, grid, nodata = raster
    red = values[:1]
    got = vectorize_in_blocks(red, grid, nodata, settings_for(grid, 6271, connectivity), (48, 48),
                              tmp_path / "p.parquet")
    # GDAL burns each polygon back (pixel centres inside it); numpy takes the means.
    ids = rasterize(zip(got.geometry, range(1, len(got) + 1), strict=True), out_shape=red.shape[1:],
                    transform=grid.affine, fill=0, dtype="int32")
    np.testing.assert_array_equal(ids > 0, foreground(red[0], 6271, nodata))
    sums = np.bincount(ids.ravel(), weights=red[0].ravel().astype(np.float64))[1:]
    counts = np.bincount(ids.ravel())[1:]
    np.testing.assert_allclose(got["score_mean"].to_numpy(), sums / counts, rtol=1e-12)


def test_min_area_drops_small_polygons_after_merging(raster, reference, tmp_path):
    values, grid, nodata = raster
    red = values[:1]
    settings = settings_for(grid, 6271, min_area=50 * 900.0)
    got = vectorize_in_blocks(red, grid, nodata, settings, (32, 32), tmp_path / "p.parquet")
    everything = reference(6271, 4)
    big = everything[shapely.area(everything) >= 50 * 900.0]
    # Large polygons are cut into pieces under 50 px by the 32 px blocks: kept only if merged first.
    assert_same_polygons(got.geometry.values, big)
    assert 10 < len(big) < len(everything) / 10


def test_simplify_tolerance_keeps_valid_polygons(raster, tmp_path):
    values, grid, nodata = raster
    red = values[:1]
    exact = vectorize_in_blocks(red, grid, nodata, settings_for(grid, 6271), (64, 64), tmp_path / "a.parquet")
    simple = vectorize_in_blocks(red, grid, nodata, settings_for(grid, 6271, simplify_tolerance=45.0),
                                 (64, 64), tmp_path / "b.parquet")
    assert len(simple) == len(exact) and simple.is_valid.all()
    vertices = [shapely.get_num_coordinates(g.geometry.values).sum() for g in (simple, exact)]
    assert vertices[0] < 0.6 * vertices[1]
    assert simple.area.sum() == pytest.approx(exact.area.sum(), rel=0.02)


def test_vector_crs_reprojects_vertices(raster, tmp_path):
    values, grid, nodata = raster
    red = values[:1]
    native = vectorize_in_blocks(red, grid, nodata, settings_for(grid, 6711), (64, 64),
                                 tmp_path / "a.parquet")
    lonlat = vectorize_in_blocks(red, grid, nodata, settings_for(grid, 6711, output_crs="EPSG:4326"),
                                 (64, 64), tmp_path / "b.parquet")
    assert lonlat.crs.to_epsg() == 4326 and native.crs.to_epsg() == 32621
    back = lonlat.to_crs(native.crs)  # vertex for vertex: reprojection moves vertices, adds none
    np.testing.assert_allclose(shapely.get_coordinates(back.geometry.values),
                               shapely.get_coordinates(native.geometry.values), rtol=0, atol=1e-6)


def test_nodata_is_never_foreground(raster, tmp_path):
    """Threshold 0 on uint16 with nodata 0: only valid pixels, so the AOI's outside stays empty."""
    values, grid, nodata = raster
    red = values[:1]
    got = vectorize_in_blocks(red, grid, nodata, settings_for(grid, 0), (64, 64), tmp_path / "p.parquet")
    assert got.area.sum() == (red[0] != nodata).sum() * 900.0 < red[0].size * 900.0


def test_nan_nodata_store(raster, tmp_path):
    """A float32 store with NaN nodata (the prediction stores' contract): NaN is never foreground."""
    values, grid, nodata = raster
    red, sub = crop(values[:1], grid, 500, 801, 0, 400)  # the town, and the AOI's edge
    scores = np.where(red == nodata, np.nan, red / 10000.0).astype(np.float32)
    got = vectorize_in_blocks(scores, sub, float("nan"), settings_for(sub, 0.6271), (32, 32),
                              tmp_path / "p.parquet")
    fg = scores[0] >= np.float32(0.6271)
    assert np.isnan(scores).any() and fg.sum() > 10_000
    assert_same_polygons(got.geometry.values, whole_raster_polygons(fg, sub.affine, 4))


def test_touching_runs():
    """Facing runs touch when they share a column (reach 0) or also when only corners meet (reach 1)."""
    key = np.zeros(3, dtype=np.int64)
    a_start, a_stop = np.array([0, 5, 10]), np.array([3, 6, 12])
    b_start, b_stop = np.array([3, 6, 11]), np.array([5, 9, 20])
    i, j = _touching(key, a_start, a_stop, key, b_start, b_stop, reach=0)
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == [(2, 2)]
    i, j = _touching(key, a_start, a_stop, key, b_start, b_stop, reach=1)
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 0), (1, 0), (1, 1), (2, 2)]
    other = np.ones(3, dtype=np.int64)  # another line, store, time or label: never touching
    assert len(_touching(key, a_start, a_stop, other, b_start, b_stop, reach=1)[0]) == 0


# ------------------------------------------------------------ through a store


def params(store, **changes) -> VectorizeMosaicParams:
    values = dict(store=store, features=["red", "green"], threshold=6271, xy_block_multiplier=2,
                  vector_crs=None, vectorize_config={"connectivity": 8})
    return VectorizeMosaicParams.parse(**(values | changes))


def run_plan(plan, storage_options=None, workers=2) -> MergeSummary:
    create_output(plan)
    parts = [s.part for s in (polygonize_group(job, plan.settings, workers=workers) for job in plan.jobs)
             if s.part]
    return merge_parts(plan, sorted(parts))


def test_store_path_per_feature(mosaic, raster, tmp_path):
    """Plan, polygonize and merge from the store (64 px blocks): each feature its own label."""
    values, grid, nodata = raster
    plan = plan_vectorize(params(mosaic), str(tmp_path), task_pixels=64 * 64)  # a block per task
    assert len(plan.jobs) == math.ceil(grid.height / 64) * math.ceil(grid.width / 64)
    result = run_plan(plan)
    got = gpd.read_parquet(result.uri)
    assert result.uri == plan.result_uri and result.polygons == len(got)
    assert list(got.columns) == ["geometry", "label", "score_mean"]
    for k, feature in enumerate(["red", "green"]):
        fg = foreground(values[k], 6271, nodata)
        assert_same_polygons(got[got.label == feature].geometry.values,
                             whole_raster_polygons(fg, grid.affine, 8))
    provenance = pq.read_schema(result.uri).metadata[b"rasterflow"]
    assert b'"workflow": "vectorize-mosaic"' in provenance


def test_nothing_above_threshold_gives_none(mosaic, tmp_path):
    plan = plan_vectorize(params(mosaic, threshold=65535), str(tmp_path))
    assert run_plan(plan) == MergeSummary(uri=None, polygons=0)
    assert not (tmp_path / "vectorize-mosaic" / plan.request_id[:16] / "polygons.parquet").exists()
    assert not list((tmp_path / "vectorize-mosaic" / plan.request_id[:16]).glob("parts/*"))


def test_request_id_follows_parameters_and_store_generation(mosaic, tmp_path):
    a = plan_vectorize(params(mosaic), str(tmp_path))
    assert plan_vectorize(params(mosaic), str(tmp_path)).request_id == a.request_id
    assert plan_vectorize(params(mosaic, threshold=6272), str(tmp_path)).request_id != a.request_id
    assert create_output(a) == create_output(a)  # the output folder is adopted, not restarted


def test_plan_checks_inputs(mosaic, tmp_path):
    with pytest.raises(InvalidParameterError) as err:
        plan_vectorize(params(mosaic, features=["red", "nir"]), str(tmp_path))
    assert err.value.param == "features" and "nir" in str(err.value) and "green" in str(err.value)
    with pytest.raises(InvalidParameterError) as err:
        plan_vectorize(params(str(tmp_path / "nowhere.zarr")), str(tmp_path))
    assert err.value.param == "store"
    assert not list(tmp_path.iterdir())  # nothing written


def test_incomplete_store_is_refused(raster, tmp_path):
    values, grid, nodata = raster
    spec = StoreSpec(uri=str(tmp_path / "s.zarr"), grid=grid, bands=["red", "green"], times=[None],
                     dtype="uint16", nodata=nodata, shard=ShardShape(chunk=16, rows=256, cols=256))
    create_store(spec, "fp", {"workflow": "test"})  # never committed: a crashed build
    with pytest.raises(InvalidParameterError, match="incomplete") as err:
        plan_vectorize(params(spec.uri), str(tmp_path / "out"))
    assert err.value.param == "store"

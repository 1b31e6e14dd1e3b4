"""Groups of blocks in one task: identical polygons whatever the grouping, seams joined in two levels,
GDAL's polygonize without the GIL, statistics from the outlines. No Prefect."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
from polygon_reference import assert_same_polygons, foreground, whole_raster_polygons
from scipy import ndimage

from rasterflow.engine.partitions import Window
from rasterflow.engine.vectorize_mosaic import gdal_polygonize
from rasterflow.engine.vectorize_mosaic.group import polygonize_group
from rasterflow.engine.vectorize_mosaic.merge import merge_parts
from rasterflow.engine.vectorize_mosaic.plan import create_output, plan_vectorize
from rasterflow.engine.vectorize_mosaic.polygonize import _pixel_polygons, _rasterio_polygons, pixel_sums
from rasterflow.params import VectorizeMosaicParams

BLOCK = 64  # 2 chunks of 32 px


def vectorize(mosaic, root, task_pixels, connectivity, threshold=6271):
    """plan -> polygonize every group (two threads) -> merge; (result, plan, summaries)."""
    request = VectorizeMosaicParams.parse(store=mosaic, features=["red", "green"], threshold=threshold,
                                          xy_block_multiplier=2, vector_crs=None,
                                          vectorize_config={"connectivity": connectivity})
    plan = plan_vectorize(request, str(root), task_pixels=task_pixels)
    create_output(plan)
    summaries = [polygonize_group(job, plan.settings, workers=2) for job in plan.jobs]
    merged = merge_parts(plan, sorted(s.part for s in summaries if s.part))
    return gpd.read_parquet(merged.uri), plan, summaries


def canonical(frame: gpd.GeoDataFrame) -> list[tuple[str, bytes, float]]:
    """Rows as (label, normalized WKB, score): equal lists mean equal polygons, vertex for vertex."""
    wkb = shapely.to_wkb(shapely.normalize(frame.geometry.values))
    return sorted(zip(frame.label, wkb, frame.score_mean, strict=True))


@pytest.mark.parametrize("connectivity", [4, 8])
def test_results_are_identical_whatever_the_grouping(mosaic, raster, tmp_path, connectivity):
    """A block per task, 3 x 3 blocks per task, and the whole raster in one task: the same rows, vertex
    for vertex and (integer band: exact sums) score for score."""
    values, grid, nodata = raster
    runs = {name: vectorize(mosaic, tmp_path / name, pixels, connectivity)
            for name, pixels in [("single", BLOCK**2), ("3x3", 9 * BLOCK**2), ("whole", 1 << 30)]}
    tasks = [int(np.ceil(grid.height / side) * np.ceil(grid.width / side)) for side in (BLOCK, 3 * BLOCK)]
    assert [len(plan.jobs) for _, plan, _ in runs.values()] == [*tasks, 1]
    assert canonical(runs["3x3"][0]) == canonical(runs["single"][0]) == canonical(runs["whole"][0])
    got = runs["3x3"][0]
    expected = whole_raster_polygons(foreground(values[0], 6271, nodata), grid.affine, connectivity)
    assert_same_polygons(got[got.label == "red"].geometry.values, expected)
    # One task holds every seam: merge-parquet has nothing left to join.
    assert runs["whole"][2][0].border == 0 and sum(s.border for s in runs["single"][2]) > 0


def test_pieces_left_for_merge_touch_their_groups_edges(mosaic, tmp_path):
    _, plan, summaries = vectorize(mosaic, tmp_path, 9 * BLOCK**2, 4)
    for job, summary in zip(plan.jobs, summaries, strict=True):
        if not summary.part:
            continue
        runs = pq.read_table(summary.part, columns=["runs"])["runs"].to_pylist()
        on_seams = [r for r in runs if r is not None]
        assert len(on_seams) == summary.border
        w = job.window
        edge = {"top": w.row0, "bottom": w.row1 - 1, "left": w.col0, "right": w.col1 - 1}
        assert all(run["line"] == edge[run["side"]] for piece in on_seams for run in piece)
    assert sum(s.border for s in summaries) > 0 and sum(s.blocks for s in summaries) > len(plan.jobs)


@pytest.fixture(scope="module")
def block(raster):
    """A 400 x 400 px block of the red band (rows 300.., cols 200..), its window and foreground."""
    values, _, nodata = raster
    window = Window(row0=300, row1=700, col0=200, col1=600)
    red = values[0, 300:700, 200:600]
    return red, window, foreground(red, 6271, nodata)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_gdal_without_the_gil_traces_what_rasterio_does(block, connectivity):
    red, window, fg = block
    assert gdal_polygonize.available()
    ours = gdal_polygonize.polygonize(fg.view(np.uint8), connectivity, window.col0, window.row0)
    theirs = _rasterio_polygons(fg, connectivity, window.col0, window.row0)
    assert len(ours.geoms) == len(theirs.geoms) > 100
    for a, b in zip((ours.xy, ours.ring_offsets, ours.polygon_offsets),
                    (theirs.xy, theirs.ring_offsets, theirs.polygon_offsets), strict=True):
        np.testing.assert_array_equal(a, b)  # vertex for vertex, ring for ring


@pytest.mark.parametrize("connectivity", [4, 8])
def test_sums_from_outlines_equal_sums_over_labelled_pixels(block, connectivity):
    red, window, fg = block
    outlines = _pixel_polygons(fg, connectivity, window.col0, window.row0)
    labels, n = ndimage.label(fg, structure=ndimage.generate_binary_structure(2, connectivity // 4))
    x, y = shapely.get_coordinates(shapely.point_on_surface(outlines.geoms)).T
    label_of = labels[(-y).astype(int) - window.row0, x.astype(int) - window.col0] - 1
    assert len(outlines.geoms) == n and sorted(label_of) == list(range(n))
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    sums, pixels = pixel_sums(red, fg, window, outlines)
    np.testing.assert_array_equal(pixels, counts[label_of])
    exact = np.bincount(labels.ravel(), weights=red.ravel().astype(np.float64), minlength=n + 1)[1:]
    np.testing.assert_array_equal(sums, exact[label_of])  # uint16: exact
    scores = np.where(fg, red / np.float32(10000), np.nan).astype(np.float32)  # a prediction's NaN nodata
    float_sums, _ = pixel_sums(scores, fg, window, outlines)
    float_exact = np.bincount(labels.ravel(), weights=np.nan_to_num(scores).ravel().astype(np.float64),
                              minlength=n + 1)[1:]
    np.testing.assert_allclose(float_sums, float_exact[label_of], rtol=1e-12)

"""build-shard: warped chunk by chunk, the same pixels however the work is cut, GDAL's pixels.

Grids here are the Landsat sample reprojected to EPSG:3857 over an AOI whose
sides are not multiples of any block or chunk size (the last row of 128-row
warp blocks is short, which GDAL's warped VRT gets wrong unpadded).
"""

from __future__ import annotations

import math
import shutil
import subprocess

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.vrt import WarpedVRT
from shapely.geometry import box

from rasterflow.engine import store
from rasterflow.engine.build_gti_mosaic.plan import plan_gti_mosaic
from rasterflow.engine.build_gti_mosaic.request import BuildGtiMosaicRequest
from rasterflow.engine.build_gti_mosaic.shard import build_shard
from rasterflow.engine.warp import EXACT_TOLERANCE, gdal_resampling, render_window
from rasterflow.enums import ResamplingMethod as R

CENTRE = (-6_070_960.0, -2_917_580.0)  # EPSG:3857, where the four tiles meet


def _aoi(tmp_path, res: float, width: int, height: int):
    """A box of exactly ``width`` x ``height`` pixels of ``res`` around the tiles' seams."""
    x0 = res * round(CENTRE[0] / res) - res * (width // 2)
    y0 = res * round(CENTRE[1] / res) - res * (height // 2)
    path = tmp_path / f"aoi-{res}-{width}x{height}.geojson"
    gpd.GeoDataFrame(geometry=[box(x0, y0, x0 + res * width, y0 + res * height)], crs=3857).to_file(path)
    return path


def _build(tmp_path, landsat, aoi, name: str, threads: int | None = None, **params):
    request = BuildGtiMosaicRequest.parse(gti=str(landsat / "tiles.parquet"), aoi=str(aoi),
                                          bands=["red", "green", "blue"], location_field="location", **params)
    out = tmp_path / name
    shutil.rmtree(out, ignore_errors=True)
    plan = plan_gti_mosaic(request, str(out))
    (sp,) = plan.stores
    store.create_store(sp.spec, sp.fingerprint, plan.provenance)
    for job in sp.jobs:
        build_shard(job, threads=threads)
    values = store.open_data_array(sp.spec.uri)[0]
    return values, sp


def _whole_grid_reference(sp, resampling: R, error_threshold: float) -> np.ndarray:
    """One call over the whole store grid: what every partitioning must equal."""
    job = sp.jobs[0]
    tiles = {t.uri: t for j in sp.jobs for t in j.tiles}
    grid = sp.spec.grid
    return render_window(grid, list(tiles.values()), job.dtype, job.nodata, resampling,
                         error_threshold=error_threshold, output_width=grid.width)


@pytest.mark.parametrize("error_threshold", [0.125, 0])
@pytest.mark.parametrize("resampling", [R.NEAREST, R.BILINEAR])
def test_shards_chunks_and_threads_never_change_a_pixel(tmp_path, landsat, resampling, error_threshold):
    aoi = _aoi(tmp_path, 23.0, 301, 269)  # 269 rows: the last warp block holds 13
    reference = None
    cuts = [
        dict(xy_chunksize=64, shard_size_bytes=64 * 64 * 6, threads=2),  # one chunk per shard and task
        dict(xy_chunksize=64, shard_size_bytes=192 * 128 * 6, threads=1),  # 3 x 2 chunks per shard
        dict(xy_chunksize=64, shard_size_bytes=10**9, threads=4),  # one shard
        dict(xy_chunksize=200, shard_size_bytes=10**9, threads=2),
        dict(xy_chunksize=512, shard_size_bytes=10**9, threads=None),  # the defaults: the process's pool
    ]
    for n, cut in enumerate(cuts):
        threads = cut.pop("threads")
        values, sp = _build(tmp_path, landsat, aoi, f"cut{n}", threads, crs_epsg=3857, resolution=23.0,
                            resampling=resampling, warp_error_threshold=error_threshold, **cut)
        assert values.shape == (3, 269, 301)
        if reference is None:
            reference = _whole_grid_reference(sp, resampling, error_threshold)
            assert (reference != 0).all(axis=0).mean() > 0.99  # the tiles cover it: not a vacuous match
        np.testing.assert_array_equal(values, reference, err_msg=f"cut {n}: {cut}, threads {threads}")


def _gdal_one_region(sp, resampling: R) -> np.ndarray:
    """GDAL 3.10's warper over the whole grid as one region per tile (the dataset path of a
    warped VRT: one WarpRegion, no blocks), exact transformer, later tiles on top."""
    grid, job = sp.spec.grid, sp.jobs[0]
    out = np.zeros((3, grid.height, grid.width), dtype="uint16")
    scratch = np.empty_like(out)
    for tile in {t.uri: t for j in sp.jobs for t in j.tiles}.values():
        extras = {"XSCALE": repr(tile.scale[0]), "YSCALE": repr(tile.scale[1])} if tile.scale else {}
        one_region = rasterio.Env(GDAL_VRT_WARP_USE_DATASET_RASTERIO="YES")
        with one_region, rasterio.open(tile.uri) as src, WarpedVRT(
            src, crs=grid.rio_crs, transform=grid.affine, width=grid.width, height=grid.height,
            resampling=gdal_resampling(resampling), src_nodata=0, nodata=0, tolerance=EXACT_TOLERANCE,
            warp_mem_limit=1024, **extras,
        ) as vrt:
            vrt.read(list(tile.band_indexes), out=scratch)
        np.copyto(out, scratch, where=scratch != 0)
    assert job.nodata == 0
    return out


def _gdalwarp(tmp_path, sp, resampling: R, landsat) -> np.ndarray:
    """The gdalwarp program (-et 0) onto the store's grid, tiles in index order."""
    grid = sp.spec.grid
    minx, miny, maxx, maxy = grid.bounds
    tiles = [str(landsat / loc) for loc in gpd.read_parquet(landsat / "tiles.parquet").location]
    dst = tmp_path / "gdalwarp.tif"
    subprocess.run(["gdalwarp", "-q", "-overwrite", "-et", "0", "-r", resampling.value, "-t_srs", "EPSG:3857",
                    "-te", *map(repr, (minx, miny, maxx, maxy)), "-ts", str(grid.width), str(grid.height),
                    *tiles, str(dst)], check=True)
    with rasterio.open(dst) as src:
        names = list(src.descriptions)
        return src.read([names.index(b) + 1 for b in ["red", "green", "blue"]])


KERNELS = [R.BILINEAR, R.CUBIC, R.CUBIC_SPLINE, R.LANCZOS, R.AVERAGE]
# (resolution m, width, height): two upsamplings of the ~33 m pixels and a downsampling (XSCALE 0.74)
SIZES = [(23.0, 261, 141), (17.0, 203, 139), (45.0, 151, 137)]


@pytest.mark.parametrize("size", SIZES, ids=[f"{int(s[0])}m-{s[1]}x{s[2]}" for s in SIZES])
@pytest.mark.parametrize("resampling", KERNELS)
def test_interpolating_kernels_equal_gdal_at_odd_sizes(tmp_path, landsat, resampling, size):
    """Exact transformer both sides. Against GDAL's warper over the whole grid at once (the
    library rasterflow runs, GDAL 3.10) within 1 DN; against the gdalwarp program (Debian's GDAL
    3.6) too where its kernels are those of 3.10 (average changed between them at tile edges) and
    where it needs no scale of its own (downsampling: gdalwarp estimates one per region)."""
    res, width, height = size
    values, sp = _build(tmp_path, landsat, _aoi(tmp_path, res, width, height), "rf", crs_epsg=3857,
                        resolution=res, resampling=resampling, warp_error_threshold=0, xy_chunksize=64,
                        shard_size_bytes=128 * 128 * 6)
    assert values.shape == (3, height, width)
    for name, expected in [("GDAL one region", _gdal_one_region(sp, resampling))] + (
            [("gdalwarp -et 0", _gdalwarp(tmp_path, sp, resampling, landsat))]
            if resampling is not R.AVERAGE and res < 33 else []):
        diff = np.abs(values.astype(int) - expected.astype(int))
        assert diff.max() <= 1, f"{name}: {int((diff > 1).sum())} values off by up to {diff.max()}"
        np.testing.assert_array_equal(values == 0, expected == 0, err_msg=name)
    last_rows = values[:, -(height % 128 or 128):]
    assert (last_rows != 0).all()  # the short last block row holds data: the case GDAL gets wrong


def test_downsampling_uses_the_tiles_scale(tmp_path, landsat):
    """XSCALE/YSCALE as GDAL computes them for a whole tile: ~33 m pixels in EPSG:3857 onto 45 m."""
    _, sp = _build(tmp_path, landsat, _aoi(tmp_path, 45.0, 151, 137), "rf", crs_epsg=3857, resolution=45.0,
                   resampling=R.LANCZOS)
    scales = [t.scale for t in sp.jobs[0].tiles]
    assert all(s is not None and math.isclose(s[0], 0.74, abs_tol=0.01) for s in scales)
    grid = sp.spec.grid
    assert grid.affine == Affine(45.0, 0, grid.affine.c, 0, -45.0, grid.affine.f)

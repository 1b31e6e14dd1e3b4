"""Multiscales pyramids from the engine alone (no Prefect): real Landsat pixels, real Zarr.

``build`` runs the engine's ``build_pyramid``: the flow's steps in the flow's
order, one partition at a time.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401
import xarray as xr
from affine import Affine
from zarr_conventions import assert_follows

from rasterflow.engine.build_gti_mosaic.plan import plan_gti_mosaic
from rasterflow.engine.build_gti_mosaic.shard import build_shard
from rasterflow.engine.build_zarr_multiscales.downsample import halve
from rasterflow.engine.build_zarr_multiscales.plan import MultiscalesPlan, PyramidPlan, plan_multiscales
from rasterflow.engine.build_zarr_multiscales.stages import build_pyramid
from rasterflow.engine.grid import Grid
from rasterflow.engine.partitions import ShardShape, Window
from rasterflow.engine.store import StoreSpec, commit_store, create_store, open_store, write_window
from rasterflow.enums import ResamplingMethod
from rasterflow.errors import InvalidParameterError
from rasterflow.params import BuildGtiMosaicParams, BuildZarrMultiscalesParams

BANDS = ["red", "green", "blue"]
CHUNK = 64


def build(store: str, out: Path, **params) -> MultiscalesPlan:
    plan = plan_multiscales(BuildZarrMultiscalesParams.parse(store=store, **params), str(out))
    for p in plan.pyramids:
        build_pyramid(p, plan.provenance)
    return plan


def circle_aoi(landsat: Path, path: Path, radius_m: float) -> Path:
    """A disc inside the sample: pixels outside it are nodata, its edge cuts 2x2 blocks."""
    aoi = gpd.read_file(landsat / "aoi.geojson").to_crs("EPSG:32621")
    disc = gpd.GeoDataFrame(geometry=[aoi.geometry[0].centroid.buffer(radius_m)], crs="EPSG:32621")
    disc.to_crs("EPSG:4326").to_file(path)
    return path


@pytest.fixture(scope="module")
def mosaic(landsat, tmp_path_factory) -> str:
    """The Landsat sample in EPSG:32621 over a disc, built by the mosaic engine; small shards."""
    tmp = tmp_path_factory.mktemp("mosaic")
    params = BuildGtiMosaicParams.parse(
        gti=str(landsat / "tiles.parquet"), aoi=str(circle_aoi(landsat, tmp / "disc.geojson", 9000)),
        bands=BANDS, location_field="location", crs_epsg=32621, xy_chunksize=CHUNK,
        shard_size_bytes=2 * CHUNK * 2 * CHUNK * 6,
    )
    plan = plan_gti_mosaic(params, str(tmp))
    (store,) = plan.stores
    create_store(store.spec, store.fingerprint, plan.provenance)
    for job in store.jobs:
        build_shard(job)
    commit_store(store.spec.uri)
    return store.spec.uri


@pytest.fixture(scope="module")
def pyramid(mosaic, tmp_path_factory) -> PyramidPlan:
    (p,) = build(mosaic, tmp_path_factory.mktemp("pyramid")).pyramids
    return p


def checksums(folder: Path) -> dict[str, str]:
    files = [f for f in sorted(folder.rglob("*")) if f.is_file()]
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def shard_objects(store: Path) -> dict[str, bytes]:
    chunks = store / "variables" / "c"
    return {str(f.relative_to(chunks)): f.read_bytes() for f in chunks.rglob("*") if f.is_file()}


def level(p: PyramidPlan, n: int) -> xr.DataArray:
    return xr.open_zarr(f"{p.uri}/{n}")["variables"]


# --- levels ----------------------------------------------------------------------------------


def test_level_zero_is_the_input_and_every_level_is_a_georeferenced_store(pyramid, mosaic):
    source = xr.open_zarr(mosaic)["variables"]
    base = level(pyramid, 0)
    np.testing.assert_array_equal(base.values, source.values)
    assert list(base.band.values) == BANDS and base.rio.transform() == source.rio.transform()
    assert (source.values == 0).mean() > 0.2  # the disc leaves plenty of nodata around it
    # Same layout as the input (a rasterflow store): level 0 copied its shard objects as they are.
    assert all(job.copy_shards for job in pyramid.levels[0].jobs)
    assert shard_objects(Path(pyramid.base.uri)) == shard_objects(Path(mosaic))
    height, width = source.shape[-2:]
    for n in range(len(pyramid.levels)):
        data = level(pyramid, n)
        assert data.rio.crs.to_epsg() == 32621
        assert data.rio.transform() == source.rio.transform() * Affine.scale(2**n)  # same origin, 2^n pixels
        assert data.shape[-2:] == (-(-height // 2**n), -(-width // 2**n))
        assert open_store(f"{pyramid.uri}/{n}").attrs["rasterflow"]["level"] == n
    last = len(pyramid.levels) - 1
    assert max(level(pyramid, last).shape[-2:]) <= CHUNK < max(level(pyramid, last - 1).shape[-2:])


def test_each_level_is_the_level_before_halved_whatever_the_partitions(pyramid):
    assert len(pyramid.levels[1].jobs) > 1  # several partitions per level
    assert pyramid.level1_reads_input  # level 1 halves the input, beside level 0's copy of it
    assert pyramid.level0_folded and sum(len(job.copies) for job in pyramid.levels[1].jobs) == len(
        pyramid.levels[0].jobs)  # each level-0 copy done by the one level-1 task over it
    assert 2 <= pyramid.tail_start < len(pyramid.levels) - 1  # the last levels: one chain, one read
    for n in range(1, len(pyramid.levels)):
        before = level(pyramid, n - 1).values[0]
        np.testing.assert_array_equal(level(pyramid, n).values[0],
                                      halve(before, 0.0, [ResamplingMethod.AVERAGE] * 3))


def test_statistics_per_band_match_numpy_and_histograms_sum(pyramid, mosaic):
    source = xr.open_zarr(mosaic)["variables"].values[0]
    root = xr.open_zarr(pyramid.uri, consolidated=False).attrs
    bands = root["bands"]
    assert bands == level(pyramid, 0).attrs["bands"]  # also where a reader of level 0 alone looks
    for b, entry in enumerate(bands):
        valid = source[b][source[b] != 0]
        stats, hist = entry["statistics"], entry["histogram"]
        assert entry["name"] == BANDS[b] and entry["resampling"] == "average" and entry["nodata"] == 0
        assert stats["count"] == valid.size and sum(hist["buckets"]) == valid.size
        assert (stats["minimum"], stats["maximum"]) == (valid.min(), valid.max())
        assert stats["mean"] == pytest.approx(valid.mean()) and stats["stddev"] == pytest.approx(valid.std())
        assert stats["valid_percent"] == pytest.approx(100 * valid.size / source[b].size, abs=1e-4)
        width = (hist["max"] - hist["min"]) / 4096  # at worst one fine bin off
        for p in (2, 98):
            exact = np.percentile(valid, p, method="inverted_cdf")
            assert abs(stats[f"percentile_{p}"] - exact) <= max(width, 0)
        (only,) = entry["time_slices"]
        assert only["time"] is None and only["statistics"] == stats


# --- metadata --------------------------------------------------------------------------------

def test_root_metadata_follows_the_published_multiscales_spatial_and_proj_schemas(pyramid):
    attrs = assert_follows(pyramid.uri, "multiscales", "spatial", "proj")["attributes"]
    layout = attrs["multiscales"]["layout"]
    # spatial v0.1 on a multiscales group: transform and shape per layout item, not at the root
    assert "spatial:transform" not in attrs and "spatial:shape" not in attrs
    assert all(len(item["spatial:transform"]) == 6 and len(item["spatial:shape"]) == 2 for item in layout)
    assert [item["asset"] for item in layout] == [str(n) for n in range(len(pyramid.levels))]
    assert all(item["derived_from"] == str(n - 1) and item["transform"]["scale"] == [2.0, 2.0]
               and item["resampling_method"] == "average" for n, item in enumerate(layout) if n)
    for n, item in enumerate(layout):  # absolute positions agree with each level's own store
        group = json.loads((Path(pyramid.uri) / str(n) / "zarr.json").read_text())["attributes"]
        for key in ("spatial:transform", "spatial:shape"):
            assert item[key] == group[key]
        assert group["proj:code"] == attrs["proj:code"] == "EPSG:32621"
        assert_follows(Path(pyramid.uri) / str(n), "spatial", "proj")
    assert (attrs["rasterflow"]["status"] == "complete"
            and attrs["rasterflow"]["workflow"] == "build-zarr-multiscales")
    tree = xr.open_datatree(pyramid.uri, engine="zarr")  # a generic reader finds every level
    assert sorted(tree.children) == [str(n) for n in range(len(pyramid.levels))]


def test_the_input_store_is_never_modified(mosaic, tmp_path):
    before = checksums(Path(mosaic))
    build(mosaic, tmp_path, levels=2, resampling=ResamplingMethod.MODE)
    assert checksums(Path(mosaic)) == before


# --- inputs that are not rasterflow stores ---------------------------------------------------


def foreign_store(path: Path, data: np.ndarray, transform: Affine, *, name="reflectance", crs="EPSG:32621",
                  nodata=None, attrs=None) -> str:
    """What a user writes with plain xarray + rioxarray (zarr v3), bands 1..n."""
    height, width = data.shape[-2:]
    x = transform.c + transform.a * (np.arange(width) + 0.5)
    y = transform.f + transform.e * (np.arange(height) + 0.5)
    dims, coords = ("y", "x"), {"y": y, "x": x}
    if data.ndim == 3:
        dims, coords = ("band", *dims), {"band": np.arange(1, data.shape[0] + 1), **coords}
    da = xr.DataArray(data, dims=dims, coords=coords, name=name, attrs=attrs or {})
    if crs:
        da = da.rio.write_crs(crs)
    if nodata is not None:
        da = da.rio.write_nodata(nodata, encoded=True)
    da.to_dataset().to_zarr(path, mode="w", zarr_format=3, consolidated=False)
    return str(path)


@pytest.fixture(scope="module")
def pixels(mosaic) -> tuple[np.ndarray, Affine]:
    source = xr.open_zarr(mosaic)["variables"]
    return source.values[0], source.rio.transform()


def test_a_plain_rioxarray_zarr_with_another_variable_name(pixels, tmp_path):
    data, transform = pixels
    path = foreign_store(tmp_path / "plain.zarr", data, transform, nodata=0)
    before = checksums(tmp_path / "plain.zarr")
    (p,) = build(path, tmp_path / "out").pyramids
    assert checksums(tmp_path / "plain.zarr") == before
    assert not any(job.copy_shards for job in p.levels[0].jobs)  # another layout: decoded and re-encoded
    base = level(p, 0)
    assert list(base.band.values) == ["1", "2", "3"] and np.isnat(base.time.values[0])
    np.testing.assert_array_equal(base.values[0], data)
    np.testing.assert_array_equal(level(p, 1).values[0], halve(data, 0.0, [ResamplingMethod.AVERAGE] * 3))
    assert level(p, 1).rio.transform() == transform * Affine.scale(2)


def test_south_up_variables_stacked_as_bands(pixels, tmp_path):
    """Two 2-D float variables, rows stored south first: bands named after them (name order), north-up out."""
    data, transform = pixels
    red, nir = data[0].astype(np.float32), data[2].astype(np.float32)
    red[red == 0] = np.nan
    height = data.shape[1]
    south_up = Affine(transform.a, 0, transform.c, 0, -transform.e, transform.f + transform.e * height)
    ds = xr.Dataset({"red": (("y", "x"), red[::-1]), "nir": (("y", "x"), nir[::-1])},
                    coords={"y": south_up.f + south_up.e * (np.arange(height) + 0.5),
                            "x": transform.c + transform.a * (np.arange(data.shape[2]) + 0.5)})
    ds.rio.write_crs("EPSG:32621", inplace=True)
    ds.to_zarr(tmp_path / "south.zarr", mode="w", zarr_format=3, consolidated=False)
    (p,) = build(str(tmp_path / "south.zarr"), tmp_path / "out").pyramids
    base = level(p, 0)
    assert list(base.band.values) == ["nir", "red"] and base.rio.transform() == transform
    np.testing.assert_array_equal(base.values[0], np.stack([nir, red]))  # NaN == NaN here
    assert p.base.dtype == "float32" and np.isnan(p.base.nodata)
    assert np.isnan(level(p, 1).values).any()  # nodata stays NaN where no pixel was valid


def test_categorical_bands_take_the_mode_unless_told_otherwise(pixels, tmp_path):
    data, transform = pixels
    classes = (data[:1] // 2000).astype(np.uint8)  # a few classes; 0 stays nodata
    path = foreign_store(tmp_path / "classes.zarr", classes, transform, nodata=0,
                         attrs={"flag_values": [1, 2, 3, 4, 5], "flag_meanings": "a b c d e"})
    (p,) = build(path, tmp_path / "out").pyramids
    assert p.methods == [ResamplingMethod.MODE]
    np.testing.assert_array_equal(level(p, 1).values[0], halve(classes, 0.0, [ResamplingMethod.MODE]))
    attrs = xr.open_zarr(p.uri, consolidated=False).attrs
    assert attrs["multiscales"]["resampling_method"] == "mode" and attrs["bands"][0]["resampling"] == "mode"
    (p,) = build(path, tmp_path / "out2", resampling={"1": ResamplingMethod.AVERAGE}).pyramids
    assert p.methods == [ResamplingMethod.AVERAGE]


def test_float_statistics_take_two_passes_and_match_numpy(pixels, tmp_path):
    """Floats have no per-value counts: moments at level 0 fix the bins, level 1 counts into them."""
    data, transform = pixels
    reflectance = np.where(data == 0, np.nan, data / 10000.0).astype(np.float32)
    height, width = data.shape[1:]
    grid = Grid(crs="EPSG:32621", transform=tuple(transform)[:6], width=width, height=height)
    spec = StoreSpec(uri=str(tmp_path / "float.zarr"), grid=grid, bands=BANDS, times=[None], dtype="float32",
                     nodata=math.nan, shard=ShardShape(chunk=CHUNK, rows=2 * CHUNK, cols=2 * CHUNK))
    create_store(spec, "fp", {"workflow": "test"})
    write_window(spec.uri, 0, Window(row0=0, row1=height, col0=0, col1=width), reflectance)
    commit_store(spec.uri)
    (p,) = build(spec.uri, tmp_path / "out", levels=3).pyramids
    assert p.needs_bins and p.level1_reads_input
    for b, entry in enumerate(xr.open_zarr(p.uri, consolidated=False).attrs["bands"]):
        valid = reflectance[b][~np.isnan(reflectance[b])].astype(np.float64)
        stats = entry["statistics"]
        assert stats["count"] == valid.size == sum(entry["histogram"]["buckets"])
        assert stats["mean"] == pytest.approx(valid.mean()) and stats["stddev"] == pytest.approx(valid.std())
        assert (stats["minimum"], stats["maximum"]) == pytest.approx((valid.min(), valid.max()))


def test_time_slices_get_their_own_statistics(tmp_path):
    grid = Grid(crs="EPSG:32621", transform=(30.0, 0.0, 500000.0, 0.0, -30.0, 7200000.0), width=90, height=70)
    spec = StoreSpec(uri=str(tmp_path / "series.zarr"), grid=grid, bands=["ndvi"],
                     times=["2020-01-01T00:00:00", "2020-02-01T00:00:00"],
                     dtype="int16", nodata=-9999.0, shard=ShardShape(chunk=32, rows=64, cols=64))
    create_store(spec, "fp", {"workflow": "test"})
    rng = np.random.default_rng(2)
    series = rng.integers(-1000, 3000, (2, 1, 70, 90)).astype(np.int16)  # 4000 values: one bin each
    series[1, :, :35] = -9999  # the second month is half missing
    for t in range(2):
        for r0 in range(0, 70, 64):
            for c0 in range(0, 90, 64):
                w = Window(row0=r0, row1=min(r0 + 64, 70), col0=c0, col1=min(c0 + 64, 90))
                write_window(spec.uri, t, w, series[t, :, w.row0 : w.row1, w.col0 : w.col1])
    commit_store(spec.uri)
    (p,) = build(spec.uri, tmp_path / "out", levels=1).pyramids  # one level: histograms re-read level 0
    assert len(p.levels) == 1
    (band,) = xr.open_zarr(p.uri, consolidated=False).attrs["bands"]
    first, second = (s["statistics"] for s in band["time_slices"])
    assert [s["time"] for s in band["time_slices"]] == ["2020-01-01T00:00:00", "2020-02-01T00:00:00"]
    assert (first["count"], second["count"]) == (6300, 3150) and second["valid_percent"] == 50.0
    assert band["statistics"]["count"] == 9450 == sum(band["histogram"]["buckets"])
    assert second["minimum"] == series[1][series[1] != -9999].min()
    for s, t in zip(band["time_slices"], range(2), strict=True):
        valid = series[t][series[t] != -9999]
        assert sum(s["histogram"]["buckets"]) == valid.size
        # exact bins
        assert s["statistics"]["percentile_98"] == np.percentile(valid, 98, method="inverted_cdf")


def test_levels_parameter_and_an_index_of_stores(mosaic, tmp_path):
    index = tmp_path / "index.parquet"
    points = gpd.points_from_xy([0, 0], [0, 0])
    rows = gpd.GeoDataFrame({"location": [mosaic, mosaic]}, geometry=points, crs="EPSG:4326")
    rows.to_parquet(index)
    plan = build(str(index), tmp_path / "out", levels=2)
    # A store listed twice is built once.
    assert [len(p.levels) for p in plan.pyramids] == [2]
    assert [Path(p.uri).name for p in plan.pyramids] == ["aoi-0.zarr"]
    rows = pd.DataFrame(plan.index_rows())
    assert list(rows.location) == [p.uri for p in plan.pyramids] and list(rows.levels) == [2]
    with pytest.raises(InvalidParameterError) as err:
        plan_multiscales(BuildZarrMultiscalesParams.parse(store=mosaic, levels=30), str(tmp_path / "x"))
    assert err.value.param == "levels" and "one pixel" in str(err.value)


# --- bad inputs: errors that name the parameter, before anything is written -----------------


def test_bad_stores_are_refused_before_writing(mosaic, pixels, tmp_path, landsat):
    data, transform = pixels
    no_crs = foreign_store(tmp_path / "nocrs.zarr", data, transform, crs=None)
    (tmp_path / "empty").mkdir()
    writing = tmp_path / "writing.zarr"
    grid = Grid(crs="EPSG:32621", transform=tuple(transform)[:6], width=10, height=10)
    spec = StoreSpec(uri=str(writing), grid=grid, bands=["a"], times=[None], dtype="uint8", nodata=0.0,
                     shard=ShardShape(chunk=16, rows=16, cols=16))
    create_store(spec, "fp", {"workflow": "test"})  # never committed
    out = tmp_path / "out"
    cases = [
        (str(tmp_path / "nowhere.zarr"), "store", "does not exist"),
        (str(tmp_path / "empty"), "store", "not a Zarr group"),
        (str(landsat / "LC08_224078_20200518_r0c0.tif"), "store", "not a Zarr group"),
        (no_crs, "store", "no CRS"),
        (str(writing), "store", "incomplete"),
    ]
    for store, param, problem in cases:
        with pytest.raises(InvalidParameterError) as err:
            build(store, out)
        assert err.value.param == param and problem in str(err.value), str(err.value)
    with pytest.raises(InvalidParameterError) as err:
        build(mosaic, out, resampling={"nir": ResamplingMethod.MODE})
    assert err.value.param == "resampling" and "nir" in str(err.value)
    for bad in (dict(levels=0), dict(resampling=ResamplingMethod.CUBIC)):
        with pytest.raises(InvalidParameterError) as err:
            build(mosaic, out, **bad)
        assert err.value.param == next(iter(bad))
    assert not out.exists()

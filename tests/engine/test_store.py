from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from affine import Affine
from pyproj import CRS
from zarr_conventions import assert_follows, errors, node

from rasterflow.engine.grid import Grid
from rasterflow.engine.partitions import ShardShape, Window
from rasterflow.engine.store import (
    StoreSpec,
    commit_store,
    create_store,
    open_store,
    read_marker,
    write_window,
)
from rasterflow.errors import StoreError

GRID = Grid(crs="EPSG:32621", transform=(30.0, 0.0, 731430.0, 0.0, -30.0, -2791380.0), width=70, height=50)
SHARD = ShardShape(chunk=16, rows=32, cols=48)
BANDS = ["blue", "green", "red"]


def _spec(tmp_path, **changes) -> StoreSpec:
    values = dict(
        uri=str(tmp_path / "mosaic.zarr"), grid=GRID, bands=BANDS, times=[None],
        dtype="uint16", nodata=0.0, shard=SHARD,
    )
    return StoreSpec(**(values | changes))


def _pixels(spec: StoreSpec, value_offset: int = 1) -> np.ndarray:
    """Distinct values per (time, band, row, col), none equal to nodata."""
    shape = (len(spec.times), len(spec.bands), spec.grid.height, spec.grid.width)
    return (np.arange(math.prod(shape)).reshape(shape) % 60000 + value_offset).astype(spec.dtype)


def _build(spec: StoreSpec, data: np.ndarray | None = None, fingerprint: str = "fp") -> str:
    generation = create_store(spec, fingerprint, {"workflow": "test"})
    if data is not None:
        for t in range(len(spec.times)):
            for r0 in range(0, spec.grid.height, spec.shard.rows):
                for c0 in range(0, spec.grid.width, spec.shard.cols):
                    w = Window(row0=r0, row1=min(r0 + spec.shard.rows, spec.grid.height),
                               col0=c0, col1=min(c0 + spec.shard.cols, spec.grid.width))
                    write_window(spec.uri, t, w, data[t, :, w.row0 : w.row1, w.col0 : w.col1])
    commit_store(spec.uri)
    return generation


def test_round_trip_layout(tmp_path):
    spec = _spec(tmp_path)
    data = _pixels(spec)
    _build(spec, data)
    ds = open_store(spec.uri)
    v = ds["variables"]
    assert v.dims == ("time", "band", "y", "x")
    assert v.shape == (1, 3, GRID.height, GRID.width)
    assert v.dtype == np.uint16
    assert list(ds["band"].values) == BANDS
    np.testing.assert_array_equal(v.values, data)


def test_same_store_through_plain_xarray(tmp_path):
    spec = _spec(tmp_path)
    data = _pixels(spec)
    _build(spec, data)
    ds = xr.open_zarr(spec.uri)
    np.testing.assert_array_equal(ds["variables"].values, data)
    assert ds.rio.crs == GRID.rio_crs


def test_single_time_slot_is_nat(tmp_path):
    spec = _spec(tmp_path)
    _build(spec)
    time = open_store(spec.uri)["time"]
    assert time.dtype == np.dtype("datetime64[ns]")
    assert time.size == 1 and np.isnat(time.values[0])


def test_two_times(tmp_path):
    spec = _spec(tmp_path, times=["2020-05-18T00:00:00", "2021-01-02T03:04:05"])
    data = _pixels(spec)
    _build(spec, data)
    ds = open_store(spec.uri)
    assert list(ds["time"].values) == [
        np.datetime64("2020-05-18T00:00:00", "ns"),
        np.datetime64("2021-01-02T03:04:05", "ns"),
    ]
    np.testing.assert_array_equal(ds["variables"].isel(time=1).values, data[1])


def test_xy_are_pixel_centres(tmp_path):
    spec = _spec(tmp_path)
    _build(spec)
    ds = open_store(spec.uri)
    a = GRID.affine
    np.testing.assert_allclose(ds["x"].values, a.c + a.a * (np.arange(GRID.width) + 0.5))
    np.testing.assert_allclose(ds["y"].values, a.f + a.e * (np.arange(GRID.height) + 0.5))
    assert (np.diff(ds["y"].values) < 0).all()
    assert ds["x"].values[0] == 731430.0 + 15.0
    assert ds["y"].values[0] == -2791380.0 - 15.0


@pytest.mark.parametrize("skip_xy_coords", [False, True])
def test_rio_crs_and_transform(tmp_path, skip_xy_coords):
    spec = _spec(tmp_path, skip_xy_coords=skip_xy_coords)
    _build(spec)
    ds = open_store(spec.uri)
    for obj in (ds, ds["variables"]):
        assert obj.rio.crs == GRID.rio_crs
        assert obj.rio.crs.to_epsg() == 32621
        assert obj.rio.transform() == GRID.affine
        assert obj.rio.shape == (GRID.height, GRID.width)
    assert "spatial_ref" in ds["variables"].coords


def test_skip_xy_coords_has_no_xy(tmp_path):
    spec = _spec(tmp_path, skip_xy_coords=True)
    _build(spec)
    ds = open_store(spec.uri)
    assert "x" not in ds.coords and "y" not in ds.coords
    assert ds["variables"].dims == ("time", "band", "y", "x")


@pytest.mark.parametrize(
    "dtype, nodata",
    [("uint16", 0.0), ("uint16", 65535.0), ("float32", -9999.0), ("float32", math.nan), ("int16", -32768.0)],
)
def test_unwritten_shards_read_as_nodata(tmp_path, dtype, nodata):
    spec = _spec(tmp_path, dtype=dtype, nodata=nodata)
    create_store(spec, "fp", {})
    written = Window(row0=0, row1=32, col0=0, col1=48)
    write_window(spec.uri, 0, written, np.ones((3, 32, 48), dtype=dtype))
    commit_store(spec.uri)
    values = open_store(spec.uri)["variables"].values[0]
    assert (values[:, :32, :48] == 1).all()
    rest = np.concatenate([values[:, 32:, :].ravel(), values[:, :32, 48:].ravel()])
    if math.isnan(nodata):
        assert np.isnan(rest).all()
    else:
        assert (rest == nodata).all()
    fill = json.loads((tmp_path / "mosaic.zarr" / "variables" / "zarr.json").read_text())["fill_value"]
    assert (fill == "NaN") if math.isnan(nodata) else (fill == nodata)


def test_geozarr_attributes_follow_the_published_proj_and_spatial_schemas(tmp_path):
    spec = _spec(tmp_path)
    _build(spec)
    attrs = assert_follows(spec.uri, "proj", "spatial")["attributes"]
    assert attrs["proj:code"] == "EPSG:32621" and CRS.from_wkt(attrs["proj:wkt2"]).to_epsg() == 32621
    assert attrs["spatial:transform"] == list(GRID.transform)
    assert attrs["spatial:shape"] == [GRID.height, GRID.width]
    assert attrs["spatial:bbox"] == [731430.0, -2791380.0 - 50 * 30, 731430.0 + 70 * 30, -2791380.0]
    assert Affine(*attrs["spatial:transform"]) == GRID.affine
    assert open_store(spec.uri).rio.crs.to_epsg() == 32621


def test_a_crs_without_a_code_is_declared_by_its_wkt(tmp_path):
    custom = CRS.from_proj4("+proj=aea +lat_1=-20 +lat_2=-30 +lat_0=-25 +lon_0=-54 +datum=WGS84 +units=m")
    spec = _spec(tmp_path, grid=GRID.model_copy(update={"crs": custom.to_wkt()}))
    _build(spec)
    attrs = assert_follows(spec.uri, "proj", "spatial")["attributes"]
    assert "proj:code" not in attrs and CRS.from_wkt(attrs["proj:wkt2"]) == custom


def test_the_schemas_refuse_what_was_declared_before(tmp_path):
    """The unpublished v1 tags and the old proj name fail: the validation can fail."""
    spec = _spec(tmp_path)
    _build(spec)
    document = node(spec.uri)
    for convention in document["attributes"]["zarr_conventions"]:
        convention["schema_url"] = convention["schema_url"].replace("/v0.1/", "/v1/")
    assert errors(document, "spatial") and errors(document, "proj")
    document = node(spec.uri)
    document["attributes"]["zarr_conventions"][0]["name"] = "proj:"
    assert errors(document, "proj") and not errors(document, "spatial")


def test_zarr_v3_sharding_metadata(tmp_path):
    spec = _spec(tmp_path)
    _build(spec)
    meta = json.loads((tmp_path / "mosaic.zarr" / "variables" / "zarr.json").read_text())
    assert meta["zarr_format"] == 3
    assert meta["dimension_names"] == ["time", "band", "y", "x"]
    assert meta["shape"] == [1, 3, GRID.height, GRID.width]
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [1, 3, SHARD.rows, SHARD.cols]
    (codec,) = meta["codecs"]
    assert codec["name"] == "sharding_indexed"
    assert codec["configuration"]["chunk_shape"] == [1, 3, SHARD.chunk, SHARD.chunk]
    array = zarr.open_array(spec.uri, path="variables", mode="r")
    assert array.shards == (1, 3, SHARD.rows, SHARD.cols)
    assert array.chunks == (1, 3, SHARD.chunk, SHARD.chunk)


def test_shard_larger_than_grid(tmp_path):
    """A grid smaller than one chunk still gets one whole shard."""
    grid = Grid(crs="EPSG:3857", transform=(10.0, 0.0, 0.0, 0.0, -10.0, 100.0), width=5, height=3)
    spec = _spec(tmp_path, grid=grid, bands=["b"], shard=ShardShape(chunk=16, rows=16, cols=16))
    create_store(spec, "fp", {})
    data = np.arange(15, dtype="uint16").reshape(1, 3, 5) + 1
    write_window(spec.uri, 0, Window(row0=0, row1=3, col0=0, col1=5), data)
    commit_store(spec.uri)
    ds = open_store(spec.uri)
    np.testing.assert_array_equal(ds["variables"].values[0], data)
    assert ds.rio.transform() == grid.affine


def test_marker_lifecycle(tmp_path):
    spec = _spec(tmp_path)
    assert read_marker(spec.uri) is None
    generation = create_store(spec, "fp-1", {"workflow": "build-gti-mosaic", "inputs": ["a.tif"]})
    marker = read_marker(spec.uri)
    assert marker.status == "writing"
    assert marker.generation == generation
    assert marker.fingerprint == "fp-1"
    assert marker.workflow == "build-gti-mosaic" and marker.inputs == ["a.tif"]
    commit_store(spec.uri)
    marker = read_marker(spec.uri)
    assert marker.status == "complete"
    assert marker.generation == generation
    assert marker.completed is not None


def test_open_refuses_incomplete_store(tmp_path):
    spec = _spec(tmp_path)
    create_store(spec, "fp", {})
    with pytest.raises(StoreError, match="incomplete"):
        open_store(spec.uri)


@pytest.mark.parametrize(
    "make", ["missing", "empty dir", "plain zarr group", "plain zarr array", "corrupt zarr.json", "geotiff"]
)
def test_open_refuses_non_store(tmp_path, landsat_tile, make):
    path = tmp_path / "thing.zarr"
    if make == "empty dir":
        path.mkdir()
    elif make == "corrupt zarr.json":
        path.mkdir()
        (path / "zarr.json").write_text("{not json")
    elif make == "geotiff":
        path = tmp_path / "tile.tif"
        shutil.copy(landsat_tile, path)
    elif make == "plain zarr group":
        zarr.open_group(str(path), mode="w", zarr_format=3).attrs["other"] = 1
    elif make == "plain zarr array":
        zarr.create_array(str(path), shape=(2,), dtype="uint8")
    with pytest.raises(StoreError, match="not a rasterflow Zarr store"):
        open_store(str(path))


def test_same_fingerprint_adopts_store(tmp_path):
    spec = _spec(tmp_path)
    first = create_store(spec, "fp-1", {})
    data = np.full((3, 32, 48), 7, dtype="uint16")
    write_window(spec.uri, 0, Window(row0=0, row1=32, col0=0, col1=48), data)
    assert create_store(spec, "fp-1", {}) == first
    commit_store(spec.uri)
    values = open_store(spec.uri)["variables"].values[0]
    np.testing.assert_array_equal(values[:, :32, :48], data)


def test_other_fingerprint_replaces_store(tmp_path):
    spec = _spec(tmp_path)
    first = _build(spec, _pixels(spec), fingerprint="fp-1")
    second = create_store(spec, "fp-2", {})
    assert second != first
    marker = read_marker(spec.uri)
    assert marker.fingerprint == "fp-2" and marker.status == "writing"
    with pytest.raises(StoreError, match="incomplete"):
        open_store(spec.uri)
    commit_store(spec.uri)
    assert (open_store(spec.uri)["variables"].values == 0).all()


def test_other_layout_replaces_store(tmp_path):
    spec = _spec(tmp_path)
    _build(spec, _pixels(spec), fingerprint="fp-1")
    other = _spec(tmp_path, bands=["nir"], dtype="float32", nodata=-1.0)
    create_store(other, "fp-2", {})
    commit_store(other.uri)
    ds = open_store(other.uri)
    assert list(ds["band"].values) == ["nir"]
    assert ds["variables"].dtype == np.float32
    assert (ds["variables"].values == -1.0).all()


def test_times_of_mixed_iso_precision(tmp_path):
    """Times as the planner writes them: ``Timestamp.isoformat()`` drops the
    fraction of whole seconds, so one store can hold both forms."""
    stamps = [pd.Timestamp("2016-01-01"), pd.Timestamp("2016-04-01 12:30:00.5")]
    spec = _spec(tmp_path, times=[s.isoformat() for s in stamps])
    assert spec.times == ["2016-01-01T00:00:00", "2016-04-01T12:30:00.500000"]
    _build(spec)
    assert list(open_store(spec.uri).indexes["time"]) == stamps


def test_runs_creating_one_store_at_once_adopt_one_generation(tmp_path):
    """Two runs of one request start together: without a lock each finds nothing, and the last one
    removes the others' stores (and their shards) to make its own."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    spec = _spec(tmp_path)
    start = threading.Barrier(6)

    def create(_: int) -> str:
        start.wait()
        return create_store(spec, "fp-1", {})

    with ThreadPoolExecutor(6) as pool:
        generations = set(pool.map(create, range(6)))
    assert generations == {read_marker(spec.uri).generation}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".lock")] == []


def test_commit_removes_the_partial_files_of_dead_writers_only(tmp_path):
    """A SIGKILLed writer leaves its temporary shard file; the commit of the run that rewrote the
    shard removes it, and never a live writer's (a concurrent run of the same request)."""
    import os
    import subprocess
    import sys

    from rasterflow.engine.store import partial_path, remove_dead_partials

    shard = tmp_path / "store.zarr" / "variables" / "c" / "0" / "0" / "1" / "1"
    shard.parent.mkdir(parents=True)
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout.strip()
    ours = partial_path(str(shard))
    dead = ours.replace(f".{os.getpid()}@", f".{dead_pid}@")
    elsewhere = ours.replace("@", "9@other-host.")
    for path in (ours, dead, elsewhere):
        open(path, "wb").close()
    assert remove_dead_partials(str(tmp_path / "store.zarr")) == 1
    assert os.path.exists(ours) and not os.path.exists(dead) and os.path.exists(elsewhere)

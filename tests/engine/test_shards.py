"""Shards streamed chunk by chunk: zarr-python's bytes, every core, memory bounded by chunks."""

from __future__ import annotations

import math
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio

from rasterflow.engine.grid import Grid
from rasterflow.engine.partitions import ShardShape, Window
from rasterflow.engine.shards import cpu_count, write_shards
from rasterflow.engine.store import StoreSpec, create_store, open_data_array

GRID = Grid(crs="EPSG:32621", transform=(30.0, 0.0, 731430.0, 0.0, -30.0, -2791380.0), width=646, height=546)
BANDS = ["blue", "green", "red"]


@pytest.fixture(scope="module")
def pixels(landsat_tile) -> np.ndarray:
    """A real Landsat tile (646 x 546, not a multiple of any chunk), with an all-nodata corner."""
    with rasterio.open(landsat_tile) as src:
        data = src.read()
    data[:, :200, :260] = 0
    return data


def _store(path: Path, dtype="uint16", nodata=0.0, chunk=64, rows=192, cols=128) -> str:
    spec = StoreSpec(uri=str(path), grid=GRID, bands=BANDS, times=[None, None], dtype=dtype, nodata=nodata,
                     shard=ShardShape(chunk=chunk, rows=rows, cols=cols))
    create_store(spec, "fp", {"workflow": "test"})
    return spec.uri


def _objects(uri: str) -> dict[str, bytes]:
    root = Path(uri) / "variables" / "c"
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _whole(shape) -> Window:
    return Window(row0=0, row1=shape[-2], col0=0, col1=shape[-1])


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_bytes_equal_zarr_writing_the_whole_array(tmp_path, pixels, threads):
    """Morton order, fill chunks left out, edge chunks padded, the index at the end: zarr's own shards."""
    expected, streamed = _store(tmp_path / "zarr.zarr"), _store(tmp_path / "streamed.zarr")
    open_data_array(expected, mode="r+")[1] = pixels
    calls = []

    def render(w: Window):
        calls.append(w)
        return pixels[:, w.row0 : w.row1, w.col0 : w.col1]

    valid = write_shards(streamed, 1, _whole(pixels.shape), render, threads=threads)
    assert valid == np.count_nonzero(pixels)
    assert len(calls) == math.ceil(546 / 64) * math.ceil(646 / 64)  # each chunk once, none past the edge
    got, want = _objects(streamed), _objects(expected)
    # every shard but the two inside the nodata corner
    assert got.keys() == want.keys() and len(want) == math.ceil(546 / 192) * math.ceil(646 / 128) - 2
    assert all(got[k] == want[k] for k in want)
    np.testing.assert_array_equal(open_data_array(streamed)[1], pixels)


def test_float_store_with_nan_fill(tmp_path, pixels):
    data = pixels.astype("float32")
    data[data == 0] = np.nan
    expected = _store(tmp_path / "zarr.zarr", dtype="float32", nodata=math.nan)
    streamed = _store(tmp_path / "streamed.zarr", dtype="float32", nodata=math.nan)
    open_data_array(expected, mode="r+")[0] = data
    valid = write_shards(streamed, 0, _whole(data.shape), lambda w: data[:, w.row0 : w.row1, w.col0 : w.col1])
    assert valid == np.count_nonzero(~np.isnan(data))
    assert _objects(streamed) == _objects(expected)


def test_a_partition_writes_only_its_shards(tmp_path, pixels):
    uri = _store(tmp_path / "s.zarr")
    window = Window(row0=192, row1=384, col0=128, col1=384)  # two whole shards
    write_shards(uri, 0, window, lambda w: pixels[:, w.row0 : w.row1, w.col0 : w.col1])
    assert sorted(_objects(uri)) == ["0/0/1/1", "0/0/1/2"]
    with pytest.raises(ValueError, match="not shard aligned"):
        write_shards(uri, 0, Window(row0=64, row1=192, col0=0, col1=128), lambda w: None)


def test_nothing_but_fill_writes_no_object_and_removes_a_stale_one(tmp_path, pixels):
    uri = _store(tmp_path / "s.zarr")
    window = Window(row0=0, row1=192, col0=0, col1=128)
    write_shards(uri, 0, window, lambda w: pixels[:, w.row0 : w.row1, w.col0 : w.col1] + 1)
    assert list(_objects(uri)) == ["0/0/0/0"]
    assert write_shards(uri, 0, window, lambda w: None) == 0
    assert _objects(uri) == {}


def test_a_failing_chunk_leaves_the_shard_as_it_was(tmp_path, pixels):
    uri = _store(tmp_path / "s.zarr")
    window = Window(row0=0, row1=192, col0=128, col1=256)
    write_shards(uri, 0, window, lambda w: pixels[:, w.row0 : w.row1, w.col0 : w.col1])
    before = _objects(uri)

    def failing(w: Window):
        if w.row0 == 128:
            raise RuntimeError("tile unreadable")
        return pixels[:, w.row0 : w.row1, w.col0 : w.col1] + 1

    with pytest.raises(RuntimeError, match="tile unreadable"):
        write_shards(uri, 0, window, failing)
    assert _objects(uri) == before
    assert not [p for p in Path(uri).rglob("*") if p.name.endswith(".partial")]


def test_memory_is_bounded_by_chunks_not_the_shard(tmp_path):
    """A 4096 x 4096 shard (32 MB a band) streamed in 256 px chunks (128 kB) never holds the shard."""
    grid = Grid(crs="EPSG:32621", transform=(1.0, 0.0, 0.0, 0.0, -1.0, 0.0), width=4096, height=4096)
    spec = StoreSpec(uri=str(tmp_path / "big.zarr"), grid=grid, bands=["b"], times=[None], dtype="uint16",
                     nodata=0.0, shard=ShardShape(chunk=256, rows=4096, cols=4096))
    create_store(spec, "fp", {})
    rng = np.random.default_rng(0)

    def render(w: Window) -> np.ndarray:
        return rng.integers(1, 50, (1, w.row1 - w.row0, w.col1 - w.col0), dtype="uint16")

    tracemalloc.start()
    try:
        write_shards(spec.uri, 0, _whole((4096, 4096)), render, threads=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    shard_bytes = 4096 * 4096 * 2
    assert peak < shard_bytes / 8, f"peak {peak / 1e6:.1f} MB for a {shard_bytes / 1e6:.0f} MB shard"
    assert open_data_array(spec.uri)[0, 0, 4095, 4095] > 0


def test_cpu_count_is_at_least_one_and_at_most_the_machine():
    assert 1 <= cpu_count() <= (os.cpu_count() or 1)

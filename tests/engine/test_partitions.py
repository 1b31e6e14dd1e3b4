from __future__ import annotations

import math

import numpy as np
import pytest

from rasterflow.engine.partitions import ShardShape, Window, partition_windows, shard_shape

# (height, width, bytes_per_pixel, chunk, shard_size_bytes, partition budget_bytes)
CASES = {
    "1x1 grid": (1, 1, 4, 16, 10**6, 10**9),
    "grid smaller than a chunk": (10, 7, 8, 512, 3_500_000_000, 10**10),
    "very wide grid": (100, 200_000, 2, 64, 64 * 64 * 2 * 6, 64 * 64 * 2 * 6 * 5),
    "very tall grid": (150_000, 90, 3, 32, 32 * 32 * 3 * 10, 32 * 32 * 3 * 10 * 7),
    "square-ish grid": (5000, 3000, 12, 256, 256 * 256 * 12 * 9, 256 * 256 * 12 * 9 * 4),
    "odd sizes, budget not a chunk multiple": (777, 1333, 6, 100, 100 * 100 * 6 * 7 + 5,
                                               100 * 100 * 6 * 30 + 1),
    "one chunk exceeds the shard size": (1000, 1000, 4, 128, 100, 10**9),
    "shard exceeds the partition budget": (1000, 1000, 4, 128, 128 * 128 * 4 * 4, 1),
    "partition budget fits the grid": (300, 500, 4, 64, 64 * 64 * 4 * 2, 10**12),
}
PARAMS = pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))


def _shard(case) -> ShardShape:
    height, width, bpp, chunk, shard_size, _ = case
    return shard_shape(height, width, bpp, chunk, shard_size)


def _windows(case) -> list[Window]:
    height, width, bpp, _, _, budget = case
    return partition_windows(height, width, _shard(case), bpp, budget)


@PARAMS
def test_shard_is_whole_chunks(case):
    shard = _shard(case)
    chunk = case[3]
    assert shard.chunk == chunk
    assert shard.rows >= chunk and shard.cols >= chunk
    assert shard.rows % chunk == 0 and shard.cols % chunk == 0


@PARAMS
def test_shard_within_size_or_one_chunk(case):
    height, width, bpp, chunk, shard_size, _ = case
    shard = _shard(case)
    if chunk * chunk * bpp > shard_size:
        assert (shard.rows, shard.cols) == (chunk, chunk)
    else:
        assert shard.rows * shard.cols * bpp <= shard_size


@PARAMS
def test_shard_clamps_to_grid(case):
    height, width, _, chunk, _, _ = case
    shard = _shard(case)
    assert shard.rows <= math.ceil(height / chunk) * chunk
    assert shard.cols <= math.ceil(width / chunk) * chunk


@PARAMS
def test_shard_is_largest_fit(case):
    """No row or column of chunks could be added within the size and the grid."""
    height, width, bpp, chunk, shard_size, _ = case
    shard = _shard(case)
    ky, kx = shard.rows // chunk, shard.cols // chunk
    units = max(1, shard_size // (chunk * chunk * bpp))
    assert (ky + 1) * kx > units or ky == math.ceil(height / chunk)
    assert ky * (kx + 1) > units or kx == math.ceil(width / chunk)


def test_shard_examples():
    assert shard_shape(10_000, 10_000, 1, 100, 100 * 100 * 4) == ShardShape(chunk=100, rows=200, cols=200)
    assert shard_shape(10_000, 10_000, 1, 100, 100 * 100 * 6) == ShardShape(chunk=100, rows=200, cols=300)
    # One row of chunks: the budget goes to x.
    assert shard_shape(50, 100_000, 1, 100, 100 * 100 * 9) == ShardShape(chunk=100, rows=100, cols=900)
    # Grid smaller than a chunk: one chunk.
    assert shard_shape(3, 5, 4, 512, 10**12) == ShardShape(chunk=512, rows=512, cols=512)


@PARAMS
def test_partitions_tile_grid_exactly(case):
    height, width = case[:2]
    cover = np.zeros((height, width), dtype=np.uint8)
    for w in _windows(case):
        assert 0 <= w.row0 < w.row1 <= height
        assert 0 <= w.col0 < w.col1 <= width
        cover[w.row0 : w.row1, w.col0 : w.col1] += 1
    assert (cover == 1).all()


@PARAMS
def test_partitions_never_split_a_shard(case):
    height, width = case[:2]
    shard = _shard(case)
    for w in _windows(case):
        assert w.row0 % shard.rows == 0 and w.col0 % shard.cols == 0
        assert w.row1 % shard.rows == 0 or w.row1 == height
        assert w.col1 % shard.cols == 0 or w.col1 == width


@PARAMS
def test_partitions_within_budget(case):
    """Counted in whole shards (what the partition's writes cover), unless one shard alone exceeds it."""
    bpp, budget = case[2], case[5]
    shard = _shard(case)
    shard_bytes = shard.rows * shard.cols * bpp
    for w in _windows(case):
        rows, cols = w.shape
        if shard_bytes > budget:
            assert rows <= shard.rows and cols <= shard.cols
        else:
            whole = math.ceil(rows / shard.rows) * shard.rows * math.ceil(cols / shard.cols) * shard.cols
            assert whole * bpp <= budget


@PARAMS
def test_partition_ids_unique_and_deterministic(case):
    first, second = _windows(case), _windows(case)
    assert first == second
    ids = [w.id for w in first]
    assert len(set(ids)) == len(ids)
    assert ids == [f"r{w.row0}-c{w.col0}" for w in first]


def test_partition_examples():
    shard = ShardShape(chunk=10, rows=20, cols=20)
    windows = partition_windows(50, 45, shard, 1, 20 * 20 * 4)
    assert windows == [
        Window(row0=0, row1=40, col0=0, col1=40),
        Window(row0=0, row1=40, col0=40, col1=45),
        Window(row0=40, row1=50, col0=0, col1=40),
        Window(row0=40, row1=50, col0=40, col1=45),
    ]
    assert windows[3].shape == (10, 5)
    assert windows[3].id == "r40-c40"


def test_budget_covering_grid_gives_one_partition():
    shard = ShardShape(chunk=16, rows=32, cols=32)
    assert partition_windows(100, 70, shard, 4, 10**9) == [Window(row0=0, row1=100, col0=0, col1=70)]

"""Chunks, shards and partitions of a store.

Zarr chunks are ``xy_chunksize`` square; a shard groups whole chunks (all bands
of one time slot) up to ``shard_size_bytes`` uncompressed; a partition is a
rectangle of whole shards within the same budget, and is what one task builds
and writes in one call. Because partitions never split a shard, no shard ever
has two writers (zarr-python's partial-shard path both loses data under
concurrency and is about 10x slower: zarr-python #3560, #3682).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import shapely
from pydantic import BaseModel, ConfigDict
from shapely import wkb
from shapely.geometry import box

from .grid import Grid


class ShardShape(BaseModel):
    model_config = ConfigDict(frozen=True)

    chunk: int  # pixels on a side of a chunk
    rows: int  # pixels of a shard in y (a multiple of chunk)
    cols: int  # pixels of a shard in x (a multiple of chunk)


class Window(BaseModel):
    """Rows [row0, row1) and columns [col0, col1) of a grid."""

    model_config = ConfigDict(frozen=True)

    row0: int
    row1: int
    col0: int
    col1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.row1 - self.row0, self.col1 - self.col0

    @property
    def id(self) -> str:
        return f"r{self.row0}-c{self.col0}"


def _fit(n_chunks_y: int, n_chunks_x: int, max_units: int) -> tuple[int, int]:
    """A near-square (ky, kx) with ky*kx <= max_units, clamped to the grid."""
    max_units = max(1, max_units)
    side = max(1, math.isqrt(max_units))
    ky = min(side, n_chunks_y)
    kx = min(max(1, max_units // ky), n_chunks_x)
    ky = min(max(1, max_units // kx), n_chunks_y)  # give back what x could not use
    return ky, kx


def shard_shape(height: int, width: int, bytes_per_pixel: int, chunk: int,
                shard_size_bytes: int) -> ShardShape:
    """Largest near-square shard of whole chunks within ``shard_size_bytes``.

    ``bytes_per_pixel`` covers all bands of one time slot. A budget smaller than
    one chunk still gives one chunk per shard: a chunk cannot be split.
    """
    chunk_bytes = chunk * chunk * bytes_per_pixel
    ky, kx = _fit(math.ceil(height / chunk), math.ceil(width / chunk), shard_size_bytes // chunk_bytes)
    return ShardShape(chunk=chunk, rows=ky * chunk, cols=kx * chunk)


def partition_windows(
    height: int, width: int, shard: ShardShape, bytes_per_pixel: int, budget_bytes: int
) -> list[Window]:
    """Tile the grid with rectangles of whole shards, each within ``budget_bytes``."""
    n_sy, n_sx = math.ceil(height / shard.rows), math.ceil(width / shard.cols)
    shard_bytes = shard.rows * shard.cols * bytes_per_pixel
    py, px = _fit(n_sy, n_sx, budget_bytes // shard_bytes)
    step_r, step_c = py * shard.rows, px * shard.cols
    return [
        Window(row0=r, row1=min(r + step_r, height), col0=c, col1=min(c + step_c, width))
        for r in range(0, height, step_r)
        for c in range(0, width, step_c)
    ]


def aoi_partitions(grid: Grid, aoi, shard: ShardShape, bytes_per_pixel: int, shard_size_bytes: int
                   ) -> Iterator[tuple[Window, Grid, object, str | None]]:
    """(window, its grid, its box, AOI mask as WKB hex or None when inside) of the partitions touching
    ``aoi``.

    Partitions outside the AOI are never planned: they read as the fill value,
    which is nodata. The mask is clipped to the window plus a pixel.
    """
    pixel = max(abs(grid.affine.a), abs(grid.affine.e))
    for window in partition_windows(grid.height, grid.width, shard, bytes_per_pixel, shard_size_bytes):
        wgrid = grid.window(window.row0, window.row1, window.col0, window.col1)
        wbox = box(*wgrid.bounds)
        if wbox.intersects(aoi):
            mask = None if aoi.contains(wbox) else aoi.intersection(wbox.buffer(pixel)).wkb_hex
            yield window, wgrid, wbox, mask


def chunk_grid(job_window: Window, job_grid: Grid, chunk: Window) -> Grid:
    """The grid of ``chunk`` (a window of the store) inside a partition's grid."""
    return job_grid.window(chunk.row0 - job_window.row0, chunk.row1 - job_window.row0,
                           chunk.col0 - job_window.col0, chunk.col1 - job_window.col0)


class AoiMask:
    """The AOI part of a partition, asked per chunk: outside (skip it), inside (no mask) or across."""

    def __init__(self, mask_wkb: str | None):
        self.geometry = wkb.loads(bytes.fromhex(mask_wkb)) if mask_wkb else None
        if self.geometry is not None:
            shapely.prepare(self.geometry)  # before the threads share it

    def outside(self, grid: Grid) -> bool:
        return self.geometry is not None and not self.geometry.intersects(box(*grid.bounds))

    def across(self, grid: Grid):
        """The geometry to mask ``grid`` with, or None when the grid lies inside the AOI."""
        if self.geometry is None or self.geometry.contains(box(*grid.bounds)):
            return None
        return self.geometry

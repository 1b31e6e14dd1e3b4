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

from ..errors import InvalidParameterError
from .grid import Grid

# Refused at plan time: a bigger grid is a unit mistake (metres on a degree CRS, a
# pixel size in the wrong unit) far more often than a wish, and its plan alone
# would exhaust memory. 2**40 pixels is a 1M x 1M grid: 4 TB of one uint32 band.
MAX_STORE_PIXELS = 2**40
# Partitions are tasks: each costs 10-120 ms of orchestration and a job in memory.
MAX_PARTITIONS = 100_000


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


def check_shard_budget(shard_size_bytes: int, chunk: int, bytes_per_pixel: int) -> None:
    """A shard holds whole chunks: a budget below one chunk cannot be met (it is a typo in bytes)."""
    chunk_bytes = chunk * chunk * bytes_per_pixel
    if shard_size_bytes < chunk_bytes:
        raise InvalidParameterError(
            "shard_size_bytes", shard_size_bytes,
            f"is less than one {chunk} x {chunk} chunk of every band ({chunk_bytes} bytes)",
            f">= {chunk_bytes}, or a smaller xy_chunksize; hundreds of MB suit object storage",
        )


def check_grid_size(height: int, width: int, resolution: float, where: str) -> None:
    """Refuse a grid too big to plan, naming the resolution that made it."""
    if height * width > MAX_STORE_PIXELS:
        raise InvalidParameterError(
            "resolution", resolution, f"gives a {width} x {height} pixel grid ({height * width:.3g} pixels) "
            f"for {where}, more than the {MAX_STORE_PIXELS:.3g} a store may hold",
            "a coarser resolution, in the units of the output CRS (degrees for EPSG:4326)",
        )


def _steps(height: int, width: int, shard: ShardShape, bytes_per_pixel: int,
           budget_bytes: int) -> tuple[int, int]:
    n_sy, n_sx = math.ceil(height / shard.rows), math.ceil(width / shard.cols)
    shard_bytes = shard.rows * shard.cols * bytes_per_pixel
    py, px = _fit(n_sy, n_sx, budget_bytes // shard_bytes)
    return py * shard.rows, px * shard.cols


def check_partition_count(height: int, width: int, shard: ShardShape, bytes_per_pixel: int,
                          budget_bytes: int) -> None:
    """Refuse more partitions (tasks) than a run can orchestrate, before any is made."""
    step_r, step_c = _steps(height, width, shard, bytes_per_pixel, budget_bytes)
    count = math.ceil(height / step_r) * math.ceil(width / step_c)
    if count > MAX_PARTITIONS:
        raise InvalidParameterError(
            "shard_size_bytes", budget_bytes,
            f"cuts the {width} x {height} pixel grid into {count} partitions (tasks), more than "
            f"{MAX_PARTITIONS}", "a larger shard_size_bytes, or a coarser resolution",
        )


def partition_windows(
    height: int, width: int, shard: ShardShape, bytes_per_pixel: int, budget_bytes: int
) -> list[Window]:
    """Tile the grid with rectangles of whole shards, each within ``budget_bytes``."""
    step_r, step_c = _steps(height, width, shard, bytes_per_pixel, budget_bytes)
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

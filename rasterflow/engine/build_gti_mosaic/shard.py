"""build-shard: one partition warped from its tiles, chunk by chunk on every core, written whole."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from .. import uris
from ..partitions import AoiMask, Window, chunk_grid
from ..shards import RenderChunk, write_shards
from ..warp import OpenTiles, render_window
from .plan import ShardJob


class ShardSummary(BaseModel):
    """What a build-shard task reports (and caches): the partition and how much of it holds data."""

    model_config = ConfigDict(frozen=True)

    key: str
    rows: int
    cols: int
    valid_values: int
    bytes: int = 0  # of pixels written, before compression


def render_chunks(job: ShardJob, opened: OpenTiles,
                  storage_options_for: uris.OptionsFor = uris.no_options) -> RenderChunk:
    """How one chunk of the job's partition is computed: the tiles reaching it, warped and masked."""
    aoi = AoiMask(job.mask_wkb)
    tile_options = uris.with_requester_pays(job.tiles[0].uri, storage_options_for(job.tiles[0].uri),
                                            job.requester_pays)

    def render(chunk: Window) -> np.ndarray | None:
        grid = chunk_grid(job.window, job.grid, chunk)
        tiles = [t for t in job.tiles if t.reaches(grid)]
        if not tiles or aoi.outside(grid):
            return None
        return render_window(
            grid, tiles, job.dtype, job.nodata, job.resampling, mask_geometry=aoi.across(grid),
            requester_pays=job.requester_pays, storage_options=tile_options,
            error_threshold=job.warp_error_threshold, origin=(chunk.row0, chunk.col0),
            output_width=job.store_width, opened=opened,
        )

    return render


def build_shard(job: ShardJob, storage_options_for: uris.OptionsFor = uris.no_options,
                threads: int | None = None) -> ShardSummary:
    """Render one partition chunk by chunk and write its shards whole (``shards.write_shards``)."""
    with OpenTiles() as opened:
        render = render_chunks(job, opened, storage_options_for)
        valid = write_shards(job.store_uri, job.time_index, job.window, render,
                             storage_options_for(job.store_uri), threads)
    rows, cols = job.window.shape
    bands = len(job.tiles[0].band_indexes) if job.tiles else 0
    return ShardSummary(key=job.key, rows=rows, cols=cols, valid_values=valid,
                        bytes=rows * cols * bands * np.dtype(job.dtype).itemsize)

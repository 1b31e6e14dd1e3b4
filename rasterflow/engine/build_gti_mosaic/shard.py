"""build-shard: one partition warped from its tiles and written whole."""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict
from shapely import wkb

from .. import uris
from ..store import write_window
from ..warp import render_window
from .plan import ShardJob


class ShardSummary(BaseModel):
    """What a build-shard task reports (and caches): the partition and how much of it holds data."""

    model_config = ConfigDict(frozen=True)

    key: str
    rows: int
    cols: int
    valid_values: int
    bytes: int = 0  # of pixels written, before compression


def count_valid(data: np.ndarray, nodata: float) -> int:
    return int(np.count_nonzero(~np.isnan(data) if math.isnan(nodata) else data != nodata))


def build_shard(job: ShardJob, storage_options_for: uris.OptionsFor = uris.no_options) -> ShardSummary:
    """Render one partition and write it whole."""
    mask = wkb.loads(bytes.fromhex(job.mask_wkb)) if job.mask_wkb else None
    tile_options = uris.with_requester_pays(job.tiles[0].uri, storage_options_for(job.tiles[0].uri),
                                            job.requester_pays)
    data = render_window(
        job.grid, job.tiles, job.dtype, job.nodata, job.resampling,
        mask_geometry=mask, requester_pays=job.requester_pays, storage_options=tile_options,
    )
    write_window(job.store_uri, job.time_index, job.window, data, storage_options_for(job.store_uri))
    rows, cols = job.window.shape
    return ShardSummary(key=job.key, rows=rows, cols=cols, valid_values=count_valid(data, job.nodata),
                        bytes=data.nbytes)

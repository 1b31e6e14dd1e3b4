"""build-shard of build-mosaic: one partition composited chunk by chunk on every core, written whole."""

from __future__ import annotations

import numpy as np

from .. import uris
from ..build_gti_mosaic.shard import ShardSummary
from ..partitions import AoiMask, Window, chunk_grid
from ..shards import write_shards
from ..warp import OpenTiles
from .composite import CompositeJob, WarpAt, composite_window


class CompositeSummary(ShardSummary):
    scenes: int  # scenes read, over every dataset of the partition


def build_composite_shard(job: CompositeJob, storage_options_for: uris.OptionsFor = uris.no_options,
                          threads: int | None = None) -> CompositeSummary:
    """Composite one partition chunk by chunk and write its shards whole (``shards.write_shards``).

    ``storage_options_for`` gives each URI's fsspec options (the config's):
    scenes on an object store with its own endpoint or keys are read with them.
    """
    aoi = AoiMask(job.mask_wkb)
    opened = OpenTiles()

    def render(chunk: Window) -> np.ndarray | None:
        grid = chunk_grid(job.window, job.grid, chunk)
        at = WarpAt(origin=(chunk.row0, chunk.col0), error_threshold=job.warp_error_threshold,
                    output_width=job.store_width, opened=opened)
        return composite_window(job, grid, at, storage_options_for, aoi)

    with opened:
        valid = write_shards(job.store_uri, job.time_index, job.window, render,
                             storage_options_for(job.store_uri), threads)
    rows, cols = job.window.shape
    return CompositeSummary(key=job.key, rows=rows, cols=cols, valid_values=valid,
                            scenes=sum(len(p.scenes) for p in job.parts),
                            bytes=rows * cols * job.n_bands * np.dtype(job.dtype).itemsize)

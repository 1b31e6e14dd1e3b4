"""build-shard of build-mosaic: one partition composited from its scenes and written whole."""

from __future__ import annotations

from .. import uris
from ..build_gti_mosaic.shard import ShardSummary, count_valid
from ..store import write_window
from .composite import CompositeJob, composite_window


class CompositeSummary(ShardSummary):
    scenes: int  # scenes read, over every dataset of the partition


def build_composite_shard(job: CompositeJob, storage_options_for: uris.OptionsFor = uris.no_options
                          ) -> CompositeSummary:
    """Composite one partition and write it whole.

    ``storage_options_for`` gives each URI's fsspec options (the config's):
    scenes on an object store with its own endpoint or keys are read with them.
    """
    data = composite_window(job, storage_options_for)
    write_window(job.store_uri, job.time_index, job.window, data, storage_options_for(job.store_uri))
    rows, cols = job.window.shape
    return CompositeSummary(key=job.key, rows=rows, cols=cols, valid_values=count_valid(data, job.nodata),
                            scenes=sum(len(p.scenes) for p in job.parts), bytes=data.nbytes)

"""A polygonize task: a group of neighbouring blocks polygonized side by side, seams inside it joined.

The group's blocks run on the process's block threads (``engine.groups``):
GDAL's polygonize releases the GIL here (``gdal_polygonize``), reading is
zarr's, and the unions are GEOS's, so one task uses every core the worker
has. Each block's finished polygons go to the group's part file as the
blocks finish, in block order; its border pieces wait for the first level of
seams (``seams.join_pieces`` over the group's window): what is whole within
the group leaves finished, what reaches the group's edges stays a piece for
merge-parquet. A task's memory is a few blocks plus the pieces on seams.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from ..groups import map_ordered
from ..partitions import Window
from .parts import PART_SCHEMA, Finisher, PartWriter
from .plan import PolygonizeJob, VectorizeSettings
from .polygonize import polygonize_block
from .seams import join_pieces

BlockRunner = Callable[[PolygonizeJob, Window, VectorizeSettings, "dict[str, Any] | None"], pa.Table]


class PolygonizeSummary(BaseModel):
    """What a polygonize task reports (and caches): its part file, if any, and what it holds."""

    model_config = ConfigDict(frozen=True)

    key: str
    part: str | None  # None: no foreground in the group, no part written
    blocks: int
    finished: int  # polygons whole within the group
    border: int  # pieces on the group's edges, joined by merge-parquet


def polygonize_group(job: PolygonizeJob, settings: VectorizeSettings,
                     storage_options: dict[str, Any] | None = None, workers: int = 1,
                     run_block: BlockRunner = polygonize_block) -> PolygonizeSummary:
    """Polygonize the group's blocks on ``workers`` threads, join the seams between them, write the part.

    ``run_block`` runs one block (in this process by default; a task may hand
    blocks to a process pool instead).
    """
    writer = PartWriter(job.part_uri, storage_options)
    border = []
    try:
        blocks = map_ordered(lambda window: run_block(job, window, settings, storage_options), job.blocks,
                             workers)
        for table in blocks:
            on_seam = table["pixels_wkb"].is_valid()
            writer.write(table.filter(pc.invert(on_seam)))
            border.append(table.filter(on_seam))
        finisher = Finisher(job.store.grid, settings)
        pieces = pa.concat_tables(border) if border else PART_SCHEMA.empty_table()
        whole, on_edges = join_pieces(pieces, {job.store_index: finisher}, settings, job.window)
        writer.write(whole)
        writer.write(on_edges)
    except BaseException:
        writer.abort()
        raise
    part = writer.publish()
    return PolygonizeSummary(key=job.key, part=part, blocks=len(job.blocks),
                             finished=writer.rows - on_edges.num_rows, border=on_edges.num_rows)

"""merge-parquet: every part joined into the request's one GeoParquet, written whole and last.

Finished rows are copied as they are; the pieces on the groups' edges are
joined across them (``seams``, the second level) and finished like them. The file is written beside its
destination (or in a temporary folder for object storage) and moved into
place whole, so readers never see half a result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict
from pyproj import CRS

from .. import uris
from ..provenance import VERSION
from .parts import PART_SCHEMA, Finisher, RowWriter, local_scratch, publish_file, read_part
from .plan import VectorizePlan, VectorizeSettings
from .seams import join_border_pieces


class MergeSummary(BaseModel):
    """What merge-parquet reports (and caches): the GeoParquet, or None without polygons."""

    model_config = ConfigDict(frozen=True)

    uri: str | None
    polygons: int


def output_columns(settings: VectorizeSettings) -> list[str]:
    stats = ["score_mean"] if settings.stats else []
    return ["geometry", "label", *stats, *(["time"] if settings.with_time else []), "bbox"]


class ResultWriter(RowWriter):
    """Streams the output columns into a local GeoParquet file with its ``geo`` metadata.

    The file is written beside its destination (local output) or in a
    temporary folder, and ``publish_file`` moves it into place whole, so
    readers never see half a result.
    """

    def __init__(self, settings: VectorizeSettings, provenance: dict[str, Any], path: str):
        columns = output_columns(settings)
        crs = CRS.from_user_input(settings.output_crs)
        geometry_types = ["Polygon"] if settings.connectivity == 4 else ["MultiPolygon", "Polygon"]
        geo = {
            "version": "1.1.0",
            "primary_column": "geometry",
            "columns": {"geometry": {
                "encoding": "WKB", "geometry_types": geometry_types, "crs": crs.to_json_dict(),
                "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}},
            }},
            "creator": {"library": "rasterflow", "version": VERSION},
        }
        schema = pa.schema([PART_SCHEMA.field(c) for c in columns]).with_metadata({
            "geo": json.dumps(geo), "rasterflow": json.dumps(provenance, default=str),
        })
        super().__init__(path, schema, columns)


def merge_tables(
    parts: Iterable[pa.Table], finishers: Sequence[Finisher], settings: VectorizeSettings,
    writer: ResultWriter,
) -> None:
    """Stream finished rows into ``writer``; join the border pieces, then write them.

    Memory: one part plus the border pieces of all parts (their pixel-space
    polygons and runs): pieces that touch an edge between groups, never more
    than the runs of foreground pixels along those edges.
    """
    border = []
    for table in parts:
        is_border = table["pixels_wkb"].is_valid()
        writer.write(table.filter(pc.invert(is_border)))
        border.append(table.filter(is_border))
    if border:
        writer.write(join_border_pieces(pa.concat_tables(border), finishers, settings))


def merge_parts(plan: VectorizePlan, part_uris: list[str], storage_options: dict[str, Any] | None = None
                ) -> MergeSummary:
    """Join the parts into the request's GeoParquet; its URI, or None without polygons."""
    finishers = [Finisher(s.grid, plan.settings) for s in plan.stores]
    uri = plan.result_uri
    tmp = local_scratch(uri)
    try:
        writer = ResultWriter(plan.settings, plan.provenance, tmp)
        try:
            merge_tables((read_part(p, storage_options) for p in part_uris), finishers, plan.settings, writer)
        finally:
            writer.close()
        if writer.rows == 0:
            uris.remove(uri, storage_options)
            return MergeSummary(uri=None, polygons=0)
        publish_file(tmp, uri, storage_options)
        return MergeSummary(uri=uri, polygons=writer.rows)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

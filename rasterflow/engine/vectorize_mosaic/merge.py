"""merge-parquet: every part joined into the request's one GeoParquet, written whole and last.

Finished rows are copied as they are; border pieces are joined across block
edges (``seams``) and finished like them. The file is written beside its
destination (or in a temporary folder for object storage) and moved into
place whole, so readers never see half a result.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict
from pyproj import CRS

from .. import uris
from ..provenance import VERSION
from .parts import PART_SCHEMA, Finisher, read_part
from .plan import RESULT_NAME, VectorizePlan, VectorizeSettings
from .seams import join_border_pieces


class MergeSummary(BaseModel):
    """What merge-parquet reports (and caches): the GeoParquet, or None without polygons."""

    model_config = ConfigDict(frozen=True)

    uri: str | None
    polygons: int


def output_columns(settings: VectorizeSettings) -> list[str]:
    stats = ["score_mean"] if settings.stats else []
    return ["geometry", "label", *stats, *(["time"] if settings.with_time else []), "bbox"]


class ResultWriter:
    """Streams rows into a local GeoParquet file in row groups of ``ROW_GROUP`` rows.

    The file is written beside its destination (local output) or in a
    temporary folder, and ``_publish_file`` moves it into place whole, so
    readers never see half a result.
    """

    ROW_GROUP = 65_536

    def __init__(self, settings: VectorizeSettings, provenance: dict[str, Any], path: str):
        self.columns = output_columns(settings)
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
        self.schema = pa.schema([PART_SCHEMA.field(c) for c in self.columns]).with_metadata({
            "geo": json.dumps(geo), "rasterflow": json.dumps(provenance, default=str),
        })
        self.path = path
        self.rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._writer = pq.ParquetWriter(path, self.schema, compression="zstd")

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._pending.append(table.select(self.columns))
            self._pending_rows += table.num_rows
            self.rows += table.num_rows
        if self._pending_rows >= self.ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            table = pa.concat_tables(self._pending).replace_schema_metadata(self.schema.metadata)
            self._writer.write_table(table, row_group_size=self.ROW_GROUP)
        self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()


def merge_tables(
    parts: Iterable[pa.Table], finishers: Sequence[Finisher], settings: VectorizeSettings,
    writer: ResultWriter,
) -> None:
    """Stream finished rows into ``writer``; join the border pieces, then write them.

    Memory: one part plus the border pieces of all parts (their pixel-space
    polygons and runs): pieces that touch an interior block edge, never more
    than the runs of foreground pixels along those edges.
    """
    border = []
    for table in parts:
        is_border = table["pixels_wkb"].is_valid()
        writer.write(table.filter(pc.invert(is_border)))
        border.append(table.filter(is_border))
    if border:
        writer.write(join_border_pieces(pa.concat_tables(border), finishers, settings))


def _publish_file(local_path: str, uri: str, storage_options: dict[str, Any] | None) -> None:
    if uris.is_local(uri):
        os.replace(local_path, uris.local_path(uri))  # same folder: an atomic rename
    else:
        fs, path = uris.filesystem(uri, storage_options)
        fs.put_file(local_path, path)  # object stores replace whole objects
        os.remove(local_path)


def merge_parts(plan: VectorizePlan, part_uris: list[str], storage_options: dict[str, Any] | None = None
                ) -> MergeSummary:
    """Join the parts into the request's GeoParquet; its URI, or None without polygons."""
    finishers = [Finisher(s.grid, plan.settings) for s in plan.stores]
    uri = plan.result_uri
    if uris.is_local(uri):
        os.makedirs(uris.local_path(plan.output_dir), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{RESULT_NAME}.", dir=uris.local_path(plan.output_dir))
    else:
        fd, tmp = tempfile.mkstemp(suffix=".parquet")
    os.close(fd)
    try:
        writer = ResultWriter(plan.settings, plan.provenance, tmp)
        try:
            merge_tables((read_part(p, storage_options) for p in part_uris), finishers, plan.settings, writer)
        finally:
            writer.close()
        if writer.rows == 0:
            uris.remove(uri, storage_options)
            return MergeSummary(uri=None, polygons=0)
        _publish_file(tmp, uri, storage_options)
        return MergeSummary(uri=uri, polygons=writer.rows)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

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


# ISO WKB type codes of 2D geometries, as GeoParquet's geometry_types names them.
WKB_TYPES = {1: "Point", 2: "LineString", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString",
             6: "MultiPolygon", 7: "GeometryCollection"}


def wkb_types(geometry: pa.ChunkedArray | pa.Array) -> set[str]:
    """The geometry types of a column of WKB, from each value's 5-byte header (nothing decoded)."""
    names = set()
    for header in pc.unique(pc.binary_slice(geometry, 0, 5)).to_pylist():
        if header:
            code = int.from_bytes(header[1:5], "little" if header[0] == 1 else "big")
            names.add(WKB_TYPES[code])
    return names


class ResultWriter(RowWriter):
    """Streams the output columns into a local GeoParquet file.

    The file is written beside its destination (local output) or in a
    temporary folder, and ``publish_file`` moves it into place whole, so
    readers never see half a result. The GeoParquet metadata goes in the
    footer, written last, so ``geometry_types`` lists the types the file holds
    (GeoParquet: readers may rely on it), not those it might: 8-connected
    regions are MultiPolygons only where GDAL's corner contacts made them so.
    """

    def __init__(self, settings: VectorizeSettings, provenance: dict[str, Any], path: str):
        columns = output_columns(settings)
        self.crs = CRS.from_user_input(settings.output_crs).to_json_dict()
        self.provenance = json.dumps(provenance, default=str)
        self.geometry_types: set[str] = set()
        # No Arrow schema in the file: readers take the footer's key-value metadata as the schema's,
        # so the "geo" key written at close is what geopandas, GDAL and DuckDB see.
        schema = pa.schema([PART_SCHEMA.field(c) for c in columns])
        super().__init__(path, schema, columns, store_schema=False)

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self.geometry_types |= wkb_types(table["geometry"])
        super().write(table)

    def geo_metadata(self) -> dict[str, Any]:
        return {
            "version": "1.1.0",
            "primary_column": "geometry",
            "columns": {"geometry": {
                "encoding": "WKB", "geometry_types": sorted(self.geometry_types), "crs": self.crs,
                "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}},
            }},
            "creator": {"library": "rasterflow", "version": VERSION},
        }

    def close(self) -> None:
        self._flush()
        self._writer.add_key_value_metadata({"geo": json.dumps(self.geo_metadata()),
                                             "rasterflow": self.provenance})
        self._writer.close()


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

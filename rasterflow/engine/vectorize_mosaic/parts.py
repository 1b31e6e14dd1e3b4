"""Parts: what a polygonize task leaves for merge-parquet, and the geometry of output rows.

A block polygonizes in whole-raster pixel coordinates (``pixel_transform``),
where every vertex is an integer and unions of pieces are exact; the
``Finisher`` applies the store's transform (with GDAL's arithmetic, so vertices
equal a whole-raster run's), the area filter, simplification and reprojection.
A part file holds one group's finished rows and the pieces on the group's
edges (``PART_SCHEMA``); ``PartWriter`` streams it to a local file and moves it
into place whole.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from affine import Affine
from pyproj import CRS, Transformer

from ...errors import RasterflowError
from .. import uris
from ..grid import Grid
from .plan import VectorizeSettings


def pixel_transform(col0: int, row0: int) -> Affine:
    """Block pixels to whole-raster pixel coordinates (column, -row).

    Integers, so unions of pieces are exact; y up like a north-up CRS, so
    rings keep their orientation when the store's transform is applied (and
    the transform is never the identity, which rasterio warns about).
    """
    return Affine(1.0, 0.0, col0, 0.0, -1.0, -row0)


class Finisher:
    """Turns pixel-space pieces of one store into output rows' geometries.

    Order matters: the area filter is exact on pixel counts; simplification is
    in the store's CRS (its tolerance is in those units); reprojection last.
    """

    def __init__(self, grid: Grid, settings: VectorizeSettings):
        self.affine = grid.affine
        self.pixel_area = abs(self.affine.determinant)
        self.settings = settings
        src, dst = CRS.from_user_input(grid.crs), CRS.from_user_input(settings.output_crs)
        self.transformer = None if src == dst else Transformer.from_crs(src, dst, always_xy=True)

    def keep(self, pixels: np.ndarray) -> np.ndarray:
        return pixels * self.pixel_area >= self.settings.min_area

    def to_crs(self, xy: np.ndarray) -> np.ndarray:
        # GDAL's own arithmetic for a geotransform, so vertices equal a whole-raster run's.
        a, col, row = self.affine, xy[:, 0], -xy[:, 1]
        return np.column_stack((a.c + col * a.a + row * a.b, a.f + col * a.d + row * a.e))

    def geometries(self, pixel_geoms: np.ndarray) -> np.ndarray:
        geoms = shapely.transform(pixel_geoms, self.to_crs)
        if self.settings.simplify_tolerance > 0:
            geoms = shapely.simplify(geoms, self.settings.simplify_tolerance, preserve_topology=True)
        if self.transformer is not None:
            t = self.transformer
            geoms = shapely.transform(geoms, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
        return geoms


_RUN = pa.struct([("side", pa.string()), ("line", pa.int32()), ("start", pa.int32()), ("stop", pa.int32())])
_BBOX = pa.struct([("xmin", pa.float64()), ("ymin", pa.float64()), ("xmax", pa.float64()),
                   ("ymax", pa.float64())])
_TIME = pa.timestamp("us")

# A part holds finished rows (geometry set) and border pieces (pixels_wkb and
# runs set). Runs: the piece's pixels on the block's outermost row (side top or
# bottom, line = that row, start/stop = columns) or column (left/right, line =
# that column, start/stop = rows), in whole-raster pixel indexes.
PART_SCHEMA = pa.schema([
    ("geometry", pa.binary()),
    ("label", pa.string()),
    ("score_mean", pa.float64()),
    ("time", _TIME),
    ("bbox", _BBOX),
    ("store", pa.int32()),
    ("time_index", pa.int32()),
    ("pixels", pa.int64()),
    ("value_sum", pa.float64()),
    ("pixels_wkb", pa.binary()),
    ("runs", pa.list_(_RUN)),
])


def _bbox_array(geoms: np.ndarray) -> pa.StructArray:
    b = shapely.bounds(geoms).reshape(-1, 4)
    return pa.StructArray.from_arrays([pa.array(b[:, i]) for i in range(4)], fields=list(_BBOX))


def _rows(n: int, **columns: Any) -> pa.Table:
    """A table of PART_SCHEMA with ``columns`` given, nulls elsewhere; scalars repeat."""
    arrays = []
    for field in PART_SCHEMA:
        value = columns.get(field.name)
        if value is None:
            arrays.append(pa.nulls(n, field.type))
        elif isinstance(value, pa.Array):
            arrays.append(value)
        elif np.isscalar(value) or isinstance(value, str):
            arrays.append(pa.array([value] * n, field.type))
        else:
            arrays.append(pa.array(value, field.type))
    return pa.Table.from_arrays(arrays, schema=PART_SCHEMA)


def _finished_rows(
    finisher: Finisher, pixel_geoms: np.ndarray, pixels: np.ndarray, sums: np.ndarray | None, label: str,
    time: pd.Timestamp | None, store: int, time_index: int,
) -> pa.Table:
    keep = finisher.keep(pixels)
    geoms = finisher.geometries(pixel_geoms[keep])
    score = sums[keep] / pixels[keep] if sums is not None else None
    return _rows(
        len(geoms), geometry=pa.array(shapely.to_wkb(geoms), pa.binary()), label=label, score_mean=score,
        time=None if time is None else pa.array([time] * len(geoms), _TIME),
        bbox=_bbox_array(geoms), store=store, time_index=time_index, pixels=pixels[keep],
    )


def read_part(uri: str, storage_options: dict[str, Any] | None = None) -> pa.Table:
    fs, path = uris.filesystem(uri, storage_options)
    try:
        return pq.read_table(path, filesystem=fs, schema=PART_SCHEMA)
    except FileNotFoundError:
        folder = uri.rsplit("/parts/", 1)[0]
        raise RasterflowError(
            f"{uri}: a block result of this request is missing (deleted while cached?); "
            f"delete {folder} and make the call again"
        ) from None


def publish_file(local_path: str, uri: str, storage_options: dict[str, Any] | None) -> None:
    """Move a finished local file to ``uri`` whole: a rename beside it, or one upload."""
    if uris.is_local(uri):
        os.replace(local_path, uris.local_path(uri))  # same folder: an atomic rename
    else:
        fs, path = uris.filesystem(uri, storage_options)
        fs.put_file(local_path, path)  # object stores replace whole objects
        os.remove(local_path)


def local_scratch(uri: str) -> str:
    """A new local file to write ``uri``'s content into: beside it when local (so the move is a rename),
    else in the temporary folder."""
    if uris.is_local(uri):
        folder = os.path.dirname(uris.local_path(uri))
        os.makedirs(folder, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=f".{os.path.basename(uri)}.", dir=folder)
    else:
        fd, path = tempfile.mkstemp(suffix=".parquet")
    os.close(fd)
    return path


class RowWriter:
    """Streams tables into a local Parquet file in row groups of ``ROW_GROUP`` rows.

    ``columns`` selects (and orders) the columns written; ``schema`` carries
    the file's metadata.
    """

    ROW_GROUP = 65_536

    def __init__(self, path: str, schema: pa.Schema, columns: list[str] | None = None,
                 store_schema: bool = True):
        self.path, self.schema, self.columns = path, schema, columns
        self.rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._writer = pq.ParquetWriter(path, schema, compression="zstd", store_schema=store_schema)

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._pending.append(table.select(self.columns) if self.columns else table)
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


class PartWriter(RowWriter):
    """A group's part: rows streamed to a local file, published at ``uri`` by ``publish`` (none if empty).

    A group's finished rows go out as its blocks finish, so a task holds a
    few blocks' rows and the pieces still on seams, never the group's whole
    result.
    """

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None):
        self.uri, self.storage_options = uri, storage_options
        super().__init__(local_scratch(uri), PART_SCHEMA)

    def abort(self) -> None:
        """Drop the local file: the task failed, nothing is published."""
        self._writer.close()
        if os.path.exists(self.path):
            os.remove(self.path)

    def publish(self) -> str | None:
        """The part's URI once it is in place, or None when no row was written."""
        try:
            self.close()
            if not self.rows:
                return None
            publish_file(self.path, self.uri, self.storage_options)
            return self.uri
        finally:
            if os.path.exists(self.path):
                os.remove(self.path)

"""What a run wrote, described for people: one table row per output.

Every row says which output it is, where on Earth (its footprint's bounds in
EPSG:4326), what it holds and how big it is, read back from what was written
(the index, the GeoParquet's metadata, the storage), not from the plan. The
row names an output by its path under the request's folder (``aoi-0.zarr``),
which the table's description gives once: full URIs made the Prefect UI's table
~2,500 px wide. ``location`` keeps the full URI for the summary.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from pyproj import CRS
from pyproj.transformer import Transformer

from .. import uris
from ..index import INDEX_CRS, read_index


def store_rows(index_uri: str, storage_options_for: Callable[[str], dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per row of an index GeoParquet (in its order)."""
    index = read_index(index_uri, storage_options_for(index_uri))
    base = uris.parent(index_uri)
    rows = []
    for row in index.itertuples(index=False):
        location = uris.resolve_location(str(row.location), base)
        rows.append({
            "store": short_name(location, base),
            "time": _format_times(row.start_time, row.end_time),
            "bands": ", ".join(row.bands),
            "shape": f"{row.height} x {row.width}",
            "crs": row.crs,
            "size": _format_size(size(location, storage_options_for(location))),
            "footprint": _format_bounds(row.geometry.bounds),
            "location": location,
        })
    return rows


def short_name(uri: str, folder: str) -> str:
    """``uri`` relative to ``folder`` when it lies under it, else its last two path parts."""
    prefix = folder.rstrip("/") + "/"
    if uri.startswith(prefix):
        return uri[len(prefix):]
    parts = uri.rstrip("/").rsplit("/", 2)
    return "/".join(["..."] + parts[-2:]) if len(parts) == 3 else uri


def polygons_row(uri: str, features: list[str],
                 storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The row of a vectorize result: its polygons' bounds come from the file's bbox statistics."""
    fs, path = uris.filesystem(uri, storage_options)
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        geo = json.loads(parquet.schema_arrow.metadata[b"geo"])
        crs = CRS.from_json_dict(geo["columns"]["geometry"]["crs"])
        bounds = parquet_bounds(parquet)
        polygons = parquet.metadata.num_rows
    to_index = Transformer.from_crs(crs, INDEX_CRS, always_xy=True)
    return {
        "file": short_name(uri, uris.parent(uri)),
        "bands": ", ".join(features),
        "polygons": polygons,
        "crs": crs.to_string(),
        "size": _format_size(size(uri, storage_options)),
        "footprint": _format_bounds(to_index.transform_bounds(*bounds)) if bounds else "",
        "location": uri,
    }


def parquet_bounds(parquet: pq.ParquetFile) -> tuple[float, float, float, float] | None:
    """(xmin, ymin, xmax, ymax) of a GeoParquet's ``bbox`` covering column, from row-group
    statistics alone (no data read); None when there are no rows or no such statistics."""
    meta = parquet.metadata
    paths = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
    names = ("bbox.xmin", "bbox.ymin", "bbox.xmax", "bbox.ymax")
    if meta.num_rows == 0 or not all(n in paths for n in names):
        return None
    stats = [[meta.row_group(g).column(paths[n]).statistics for g in range(meta.num_row_groups)]
             for n in names]
    if any(s is None or not s.has_min_max for column in stats for s in column):
        return None
    return (min(s.min for s in stats[0]), min(s.min for s in stats[1]),
            max(s.max for s in stats[2]), max(s.max for s in stats[3]))


def size(uri: str, storage_options: dict[str, Any] | None = None) -> int:
    """Bytes under ``uri``: a file's size, or the sum over a store's objects."""
    fs, path = uris.filesystem(uri, storage_options)
    return int(fs.du(path, total=True)) if fs.isdir(path) else int(fs.size(path))


def _format_bounds(bounds) -> str:
    """West, south, east, north to 4 decimals (about 10 m)."""
    return ", ".join(f"{v:.4f}" for v in bounds)


def _format_times(start, end) -> str:
    """Dates as people write them ("2021-01-01"), a period as "2021-01-01 to 2022-01-01"."""
    if pd.isna(start):
        return ""
    first, last = (_date(pd.Timestamp(t)) for t in (start, end))
    return first if first == last else f"{first} to {last}"


def _date(stamp: pd.Timestamp) -> str:
    return stamp.strftime("%Y-%m-%d") if stamp == stamp.normalize() else stamp.strftime("%Y-%m-%d %H:%M")


def _format_size(n: float) -> str:
    if n < 1000:
        return f"{n:.0f} B"
    n /= 1000
    for unit in ("kB", "MB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"

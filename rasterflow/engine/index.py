"""Output indexes: the GeoParquet every workflow answers with.

One row per output store: ``location`` (the store URI), ``geometry`` (its
footprint in EPSG:4326) and what it holds, so a user can find the store for a
place and time with one spatial filter, in geopandas, DuckDB or QGIS.
"""

from __future__ import annotations

import io
from typing import Any

import geopandas as gpd

from . import uris

INDEX_CRS = "EPSG:4326"


def write_index(rows: list[dict[str, Any]], uri: str, storage_options: dict[str, Any] | None = None) -> str:
    """Write ``rows`` (each with a shapely ``geometry`` in EPSG:4326) as GeoParquet."""
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=INDEX_CRS)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, write_covering_bbox=True)
    uris.write_bytes_atomic(uri, buffer.getvalue(), storage_options)
    return uri


def read_index(uri: str, storage_options: dict[str, Any] | None = None) -> gpd.GeoDataFrame:
    fs, path = uris.filesystem(uri, storage_options)
    return gpd.read_parquet(path, filesystem=fs)

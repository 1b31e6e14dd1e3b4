"""Output indexes: the GeoParquet every workflow answers with.

One row per output store: ``location`` (the store URI), ``geometry`` (its
footprint in EPSG:4326) and what it holds, so a user can find the store for a
place and time with one spatial filter, in geopandas, DuckDB or QGIS.
"""

from __future__ import annotations

import io
from typing import Any

import geopandas as gpd
import pandas as pd
from shapely import wkb

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


STORE_OR_INDEX = (
    "a Zarr store URI, or an index GeoParquet whose 'location' column lists stores "
    "(what every workflow returns)"
)


def is_zarr_group(uri: str, storage_options: dict[str, Any] | None = None) -> bool:
    return any(uris.exists(uris.join(uri, name), storage_options) for name in ("zarr.json", ".zgroup"))


def stores_of(uri: str, storage_options: dict[str, Any] | None = None, param: str = "store") -> list[str]:
    """The stores ``uri`` names: itself when it is a Zarr group, else every
    ``location`` of the index GeoParquet it is (relative ones against the index).

    Every workflow that reads stores takes either, so a workflow's answer can be
    passed straight to the next one.
    """
    from ..errors import InvalidParameterError

    if is_zarr_group(uri, storage_options):
        return [uri]
    if not uris.exists(uri, storage_options):
        raise InvalidParameterError(param, uri, "does not exist", STORE_OR_INDEX)
    try:
        index = read_index(uri, storage_options)
    except Exception as exc:  # parquet readers raise many types for a file that is not one
        raise InvalidParameterError(
            param, uri, f"is not a Zarr group (no zarr.json or .zgroup) nor an index GeoParquet ({exc})",
            STORE_OR_INDEX,
        ) from None
    if "location" not in index.columns:
        raise InvalidParameterError(param, uri,
                                    f"index has no 'location' column (columns: {list(index.columns)})",
                                    STORE_OR_INDEX)
    if index.empty:
        raise InvalidParameterError(param, uri, "index lists no store", STORE_OR_INDEX)
    base = uris.parent(uri)
    return list(dict.fromkeys(uris.resolve_location(str(loc), base) for loc in index["location"]))


def store_row(spec, workflow: str, footprint_wkb: str, *, location: str | None = None,
              times: list[str | None] | None = None, **extra: Any) -> dict[str, Any]:
    """The index row of one store (a ``StoreSpec``): where it is, what it holds, when, and where.

    ``extra`` columns (the workflow's own: source, model, levels...) follow
    ``workflow``; ``times`` overrides the store's own time slices.
    """
    stamps = [pd.Timestamp(t) for t in (spec.times if times is None else times) if t is not None]
    return {
        "location": location or spec.uri,
        "workflow": workflow,
        **extra,
        "start_time": min(stamps) if stamps else pd.NaT,
        "end_time": max(stamps) if stamps else pd.NaT,
        "crs": spec.grid.rio_crs.to_string(),
        "bands": list(spec.bands),
        "width": spec.grid.width,
        "height": spec.grid.height,
        "res_x": spec.grid.res[0],
        "res_y": spec.grid.res[1],
        "dtype": spec.dtype,
        "nodata": spec.nodata,
        "geometry": wkb.loads(bytes.fromhex(footprint_wkb)),
    }

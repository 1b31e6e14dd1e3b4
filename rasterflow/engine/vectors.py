"""Vector inputs: tile indexes and areas of interest, read by geopandas from any URI.

Any failure to read one is an error naming the parameter it came from, and
geometries are densified before reprojection so a straight edge in one CRS
keeps its curved shape in another.
"""

from __future__ import annotations

import io
from typing import Any

import geopandas as gpd

from ..errors import InvalidParameterError
from . import uris

VECTOR_FORMATS = "a GeoParquet, GeoPackage, GeoJSON, Shapefile or other file geopandas reads"


def read_vector(uri: str, param: str, storage_options: dict[str, Any] | None = None) -> gpd.GeoDataFrame:
    """Read an index or AOI; any failure is an error naming ``param``."""
    try:
        if uri.lower().endswith((".parquet", ".geoparquet", ".pq")):
            fs, path = uris.filesystem(uri, storage_options)
            frame = gpd.read_parquet(path, filesystem=fs)
        elif uris.is_local(uri):
            frame = gpd.read_file(uris.local_path(uri))
        else:
            with uris.open_input(uri, storage_options) as fh:
                frame = gpd.read_file(io.BytesIO(fh.read()))
    except FileNotFoundError:
        raise InvalidParameterError(param, uri, "no such file or object", VECTOR_FORMATS) from None
    except Exception as exc:  # readers raise a zoo of types for bad input
        raise InvalidParameterError(param, uri, f"cannot be read as a vector dataset ({exc})",
                                    VECTOR_FORMATS) from None
    if frame.crs is None:
        raise InvalidParameterError(param, uri, "has no CRS", "a dataset whose geometries declare a CRS")
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    if frame.empty:
        raise InvalidParameterError(param, uri, "holds no geometries", "at least one non-empty geometry")
    return frame


def densified(geom, parts: int = 64):
    """``geom`` with vertices at most 1/``parts`` of its larger extent apart, for reprojection."""
    minx, miny, maxx, maxy = geom.bounds
    return geom.segmentize(max(maxx - minx, maxy - miny, 1e-9) / parts)

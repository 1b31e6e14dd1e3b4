"""Vector inputs: tile indexes and areas of interest, read by geopandas from any URI.

Any failure to read one is an error naming the parameter it came from, and
geometries are densified before reprojection so a straight edge in one CRS
keeps its curved shape in another.
"""

from __future__ import annotations

import io
import math
from typing import Any

import geopandas as gpd

from ..errors import InvalidParameterError
from . import uris

VECTOR_FORMATS = "a GeoParquet, GeoPackage, GeoJSON, Shapefile or other file geopandas reads"


def read_vector(uri: str, param: str, storage_options: dict[str, Any] | None = None,
                keep_empty: bool = False) -> gpd.GeoDataFrame:
    """Read an index or AOI; any failure is an error naming ``param``.

    Rows without a geometry are dropped unless ``keep_empty`` (an AOI's rows
    are its outputs: a missing one is the user's to see).
    """
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
    if not keep_empty:
        frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    if frame.empty:
        raise InvalidParameterError(param, uri, "holds no geometries", "at least one non-empty geometry")
    return frame


AREAL = ("Polygon", "MultiPolygon")


def read_aoi(uri: str, storage_options: dict[str, Any] | None = None, param: str = "aoi") -> gpd.GeoDataFrame:
    """An AOI whose every row is a valid polygon with an area: each row becomes one output store.

    A point or a line would make a store one pixel wide, a self-intersecting
    polygon an undefined mask (GEOS answers differently by operation), and an
    empty row a store of nodata: each is an error naming the row, found
    before anything is read or written.
    """
    frame = read_vector(uri, param, storage_options, keep_empty=True).reset_index(drop=True)
    for row, geom in enumerate(frame.geometry):
        problem = _aoi_problem(geom)
        if problem:
            raise InvalidParameterError(param, uri, f"row {row}: {problem}",
                                        "one valid Polygon or MultiPolygon with an area per row")
    return frame


def _aoi_problem(geom) -> str | None:
    if geom is None or geom.is_empty:
        return "has no geometry"
    if geom.geom_type not in AREAL:
        return f"is a {geom.geom_type}, not an area (buffer it into a polygon to cover its surroundings)"
    if not geom.is_valid:
        from shapely.validation import explain_validity

        return f"is not a valid polygon ({explain_validity(geom)}); repair it, e.g. with shapely.make_valid"
    if not geom.area > 0:
        return "has no area"
    if not all(math.isfinite(v) for v in geom.bounds):
        return "has non-finite coordinates"
    return None


def densified(geom, parts: int = 64):
    """``geom`` with vertices at most 1/``parts`` of its larger extent apart, for reprojection."""
    minx, miny, maxx, maxy = geom.bounds
    return geom.segmentize(max(maxx - minx, maxy - miny, 1e-9) / parts)

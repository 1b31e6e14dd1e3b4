"""Polygons for the browser: GeoJSON when few, vector tiles when many.

A browser holds a few ten thousand polygons as GeoJSON; a county of field
boundaries is ~100k. Past ``MAX_GEOJSON`` polygons, GDAL cuts them into
Mapbox vector tiles once, in an MBTiles file (SQLite: one file, read with the
standard library, opened by QGIS and any GDAL >= 2.3), kept in a cache folder
under the file's identity; the server hands out the tiles the page shows.
PMTiles would need GDAL >= 3.8 to read and a JavaScript reader in the page.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import geopandas as gpd

from .. import uris
from ..provenance import stable_hash
from .layers import WGS84, VectorLayer

MAX_GEOJSON = 20_000
# Vector tiles from zoom 0 to this; MapLibre overzooms past it (polygons are simplified to the tile grid).
VECTOR_MAXZOOM = 14


def read_polygons(uri: str, storage_options: dict[str, Any] | None = None) -> gpd.GeoDataFrame:
    fs, path = uris.filesystem(uri, storage_options)
    return gpd.read_parquet(path, filesystem=fs)


def geojson(layer: VectorLayer, storage_options: dict[str, Any] | None = None) -> bytes:
    """The polygons in EPSG:4326 as a GeoJSON FeatureCollection (times as ISO strings)."""
    frame = read_polygons(layer.uri, storage_options).to_crs(WGS84)
    for column in frame.columns:
        if column != frame.geometry.name and str(frame[column].dtype).startswith("datetime"):
            frame[column] = frame[column].dt.strftime("%Y-%m-%d")
    return frame.to_json(drop_id=True).encode()


def mbtiles(layer: VectorLayer, cache_dir: Path, storage_options: dict[str, Any] | None = None) -> Path:
    """An MBTiles file of the polygons as vector tiles (layer ``polygons``), made once per file version."""
    identity = stable_hash([layer.uri, uris.file_fingerprint(layer.uri, storage_options)])[:16]
    target = cache_dir / f"{identity}.mbtiles"
    if target.exists():
        return target
    import pyogrio

    cache_dir.mkdir(parents=True, exist_ok=True)
    frame = read_polygons(layer.uri, storage_options)
    partial = cache_dir / f"{identity}.{os.getpid()}.partial.mbtiles"
    partial.unlink(missing_ok=True)
    pyogrio.write_dataframe(frame.to_crs("EPSG:3857"), partial, driver="MBTiles", layer="polygons",
                            dataset_options={"MINZOOM": 0, "MAXZOOM": VECTOR_MAXZOOM, "NAME": layer.title})
    partial.replace(target)
    return target


def vector_tile(archive: Path, z: int, x: int, y: int) -> bytes | None:
    """The gzipped MVT bytes of tile (z, x, y) (XYZ numbering; MBTiles counts rows from the south)."""
    import sqlite3

    with sqlite3.connect(f"file:{archive}?mode=ro", uri=True) as db:
        row = db.execute("SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
                         (z, x, (1 << z) - 1 - y)).fetchone()
    return bytes(row[0]) if row else None


def too_many_for_geojson(layer: VectorLayer, limit: int = MAX_GEOJSON) -> bool:
    return layer.polygons > limit

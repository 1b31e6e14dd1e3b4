"""Tile indexes (GDAL GTI style) and the tiles they point at.

An index is any vector dataset geopandas reads: one row per tile, a footprint
geometry and a column with the tile's location. Tiles are opened once at plan
time for their headers, so wrong bands, missing nodata or unreadable files are
reported before anything is written.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import rasterio
from pydantic import BaseModel, ConfigDict
from rasterio.errors import RasterioError

from ...errors import InputReadError
from .. import uris
from ..gdal import read_error, tile_env


class TileInfo(BaseModel):
    """What the plan needs to know of one tile (read from its header)."""

    model_config = ConfigDict(frozen=True)

    uri: str
    crs: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    dtype: str
    nodata: float | None
    descriptions: tuple[str | None, ...]
    fingerprint: str


def inspect_tile(uri: str, storage_options: dict[str, Any] | None = None,
                 requester_pays: bool = False) -> TileInfo:
    try:
        with tile_env(requester_pays, storage_options), rasterio.open(uris.rasterio_path(uri)) as src:
            if src.crs is None:
                raise InputReadError(uri, "tile has no CRS")
            info = dict(
                uri=uri, crs=src.crs.to_wkt(), transform=tuple(src.transform)[:6],
                width=src.width, height=src.height, dtype=src.dtypes[0], nodata=src.nodata,
                descriptions=tuple(src.descriptions),
            )
    except RasterioError as exc:
        raise read_error(uri, exc, storage_options) from None
    try:
        fingerprint = uris.file_fingerprint(uri, storage_options)
    except Exception:  # GDAL could read it; a store without stat still works
        fingerprint = "unknown"
    return TileInfo(**info, fingerprint=fingerprint)


def inspect_tiles(
    tile_uris: list[str], storage_options: dict[str, Any] | None = None, requester_pays: bool = False
) -> list[TileInfo]:
    """Headers of many tiles, read concurrently (remote opens are latency bound)."""
    if not tile_uris:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(tile_uris))) as pool:
        return list(pool.map(lambda u: inspect_tile(u, storage_options, requester_pays), tile_uris))


def band_indexes(tile: TileInfo, bands: list[str]) -> tuple[int, ...] | None:
    """1-based band numbers of ``bands`` in ``tile``, or None if any is missing."""
    names = list(tile.descriptions)
    if not all(b in names for b in bands):
        return None
    return tuple(names.index(b) + 1 for b in bands)

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
        size, fingerprint = _size_and_fingerprint(uri, storage_options)
        with tile_env(requester_pays, storage_options), rasterio.open(uris.rasterio_path(uri)) as src:
            if src.crs is None:
                raise InputReadError(uri, "tile has no CRS")
            if size is not None:
                _check_blocks_present(src, uri, size)
            info = dict(
                uri=uri, crs=src.crs.to_wkt(), transform=tuple(src.transform)[:6],
                width=src.width, height=src.height, dtype=src.dtypes[0], nodata=src.nodata,
                descriptions=tuple(src.descriptions),
            )
    except RasterioError as exc:
        raise read_error(uri, exc, storage_options) from None
    return TileInfo(**info, fingerprint=fingerprint)


def _size_and_fingerprint(uri: str, storage_options: dict[str, Any] | None) -> tuple[int | None, str]:
    """The file's size (None when the store will not say) and what identifies its content."""
    try:
        fs, path = uris.filesystem(uri, storage_options)
        info = fs.info(path)
    except Exception:  # GDAL may still read it (a store without stat works); it says why if not
        return None, "unknown"
    stamp = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or ""
    size = info.get("size")
    return (size if isinstance(size, int) else None), f"{size}:{stamp}"


def _check_blocks_present(src, uri: str, size: int) -> None:
    """A TIFF whose blocks end past the end of the file was truncated (an interrupted copy).

    GDAL opens such a file, since its header is whole, and fails only when a
    task reads a missing block, after other tasks wrote their shards. The block
    offsets are in the header, so the plan can tell. Other formats say nothing
    here and pass.
    """
    bands = range(1, src.count + 1) if src.interleaving and src.interleaving.name == "BAND" else [1]
    rows = -(-src.height // src.block_shapes[0][0])
    cols = -(-src.width // src.block_shapes[0][1])
    for band in bands:
        for y in range(rows):
            for x in range(cols):
                offset = src.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=band)
                if offset is None:
                    return  # not a TIFF, or a driver that does not say
                length = src.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=band)
                end = int(offset) + int(length or 0)
                if end > size:
                    raise InputReadError(uri, f"tile is truncated: block ({x}, {y}) of band {band} ends at "
                                              f"byte {end}, the file has {size}; copy it again")


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

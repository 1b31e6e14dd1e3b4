"""What build_gti_mosaic takes: a GTI tile index, an AOI and how to mosaic them."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from ...enums import ResamplingMethod
from ...errors import InvalidParameterError
from ..request import (
    DEFAULT_SHARD_SIZE_BYTES,
    DEFAULT_WARP_ERROR_THRESHOLD,
    DEFAULT_XY_CHUNKSIZE,
    Aoi,
    BandNames,
    ChunkSize,
    CrsEpsg,
    CrsRequest,
    Resolution,
    ShardBytes,
    SkipXyCoords,
    TargetCrs,
    Uri,
    WarpErrorThreshold,
)
from .query import validate_query_syntax


def _safe_query(value: str | None) -> str | None:
    if value is not None:
        try:
            validate_query_syntax(value)
        except InvalidParameterError as exc:
            raise ValueError(exc.problem) from None
    return value


class BuildGtiMosaicRequest(CrsRequest):
    gti: Annotated[Uri, Field(description=(
        "Tile index: a GeoParquet or any vector file geopandas reads, one row per tile, its geometry the "
        "tile's footprint. Tiles may be in several CRSs."))]
    aoi: Aoi
    bands: Annotated[BandNames, Field(description=(
        "Band names, matched against each tile's band descriptions, in output order. Every selected tile "
        "must have them all."))]
    location_field: Annotated[str, Field(min_length=1, description=(
        "Index column with each tile's path or URL; relative paths resolve against the index's folder. "
        "`s3://`, `gs://`, `https://` are read by GDAL."))]
    crs_epsg: CrsEpsg = None
    time_column: Annotated[str | None, Field(description=(
        "Index column grouping tiles into time slices (sorted). Datetime, date or ISO string columns are "
        "used as they are; integer columns are years. None: one NaT slice."))] = None
    skip_xy_coords: SkipXyCoords = False
    xy_chunksize: ChunkSize = DEFAULT_XY_CHUNKSIZE
    shard_size_bytes: ShardBytes = DEFAULT_SHARD_SIZE_BYTES
    query: Annotated[str | None, AfterValidator(_safe_query), Field(description=(
        "Filter on index columns, pandas query syntax restricted to comparisons, `and`/`or`/`not`, `& | ~`, "
        "`in`, column names (backticks for odd names) and literals. `@` variables, calls, attribute access, "
        "indexing, arithmetic and dunder names are refused."))] = None
    requester_pays: Annotated[bool, Field(description=(
        "Read the index, AOI and tiles of requester-pays buckets: GDAL sends "
        "`AWS_REQUEST_PAYER=requester`, s3fs `requester_pays=True`."))] = False
    sort_field: Annotated[str | None, Field(description=(
        "Index column deciding which tile is on top where tiles overlap: GDAL GTI's rule, ascending, the "
        "highest value on top. None: later rows win."))] = None
    resampling: Annotated[ResamplingMethod, Field(description=(
        "GDAL warp kernel (`ResamplingMethod`, values as `gdalwarp -r` takes them)."))] = \
        ResamplingMethod.NEAREST
    resolution: Annotated[Resolution, Field(description=(
        "Pixel size in units of the target CRS. None: the finest native resolution of the tiles carried into "
        "the target CRS, as gdalwarp computes it (`GDALSuggestedWarpOutput2`, per axis)."))] = None
    nodata: Annotated[float | None, Field(description=(
        "Output nodata value and Zarr fill value. None: the tiles' (all must declare one)."))] = None
    warp_error_threshold: WarpErrorThreshold = DEFAULT_WARP_ERROR_THRESHOLD
    target_crs: TargetCrs = None

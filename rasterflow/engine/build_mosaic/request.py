"""What build_mosaic takes: named datasets, an AOI and a period."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from ...enums import DatasetEnum
from ..request import (
    DEFAULT_SHARD_SIZE_BYTES,
    DEFAULT_WARP_ERROR_THRESHOLD,
    DEFAULT_XY_CHUNKSIZE,
    Aoi,
    ChunkSize,
    CrsEpsg,
    CrsRequest,
    Day,
    Resolution,
    ShardBytes,
    SkipXyCoords,
    TargetCrs,
    WarpErrorThreshold,
    end_not_before_start,
)


def _each_once(value: list[DatasetEnum]) -> list[DatasetEnum]:
    dupes = sorted({d.value for d in value if value.count(d) > 1})
    if dupes:
        raise ValueError(f"each dataset once; repeated: {dupes}")
    return value


class BuildMosaicRequest(CrsRequest):
    datasets: Annotated[list[DatasetEnum], Field(min_length=1), AfterValidator(_each_once),
                        Field(description=(
        "Named datasets (DatasetEnum), each once; several share one grid, their bands named "
        "<dataset>:<band>."))]
    aoi: Annotated[Aoi, Field(description=(
        "Area of interest: any vector file geopandas reads; one store per geometry. Its centroid's latitude "
        "picks the season windows."))]
    start: Annotated[Day, Field(description="First day of the period (a date or YYYY-MM-DD), inclusive.")]
    end: Annotated[Day, Field(description=(
        "Last day of the period, inclusive: one time slice per calendar year in [start, end]."))]
    crs_epsg: CrsEpsg = None
    xy_chunksize: ChunkSize = DEFAULT_XY_CHUNKSIZE
    shard_size_bytes: ShardBytes = DEFAULT_SHARD_SIZE_BYTES
    resolution: Annotated[Resolution, Field(description=(
        "Pixel size in units of the target CRS. None: the finest native resolution of the datasets, in "
        "metres (converted at 111 320 m per degree for a geographic CRS)."))] = None
    skip_xy_coords: SkipXyCoords = False
    warp_error_threshold: WarpErrorThreshold = DEFAULT_WARP_ERROR_THRESHOLD
    target_crs: TargetCrs = None

    @field_validator("end")
    @classmethod
    def _ordered(cls, value: date, info: ValidationInfo) -> date:
        return end_not_before_start(value, info.data.get("start"))

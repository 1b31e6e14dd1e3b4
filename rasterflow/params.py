"""One pydantic model per workflow, shared by the client, the flows and the CLI.

They check what can be checked without I/O (types, ranges, EPSG codes, query
syntax), so a wrong call fails in the caller before any flow run exists. Checks
that need the inputs (bands present, AOI overlaps tiles) run in the flow's plan
step, still before anything is written.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pyproj import CRS
from pyproj.exceptions import CRSError

from .engine.query import validate_query_syntax
from .enums import ResamplingMethod, RuntimeEnum
from .errors import InvalidParameterError

# Parameters that are about where a run executes or its secrets, not what it
# computes: excluded from fingerprints, provenance and flow-run parameters.
NON_COMPUTING = frozenset({"envs", "runtime"})


class WorkflowParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    runtime: RuntimeEnum = RuntimeEnum.SMALL
    envs: dict[str, str] | None = Field(default=None, repr=False, exclude=True)

    @classmethod
    def parse(cls, **values: Any):
        """Validate, turning pydantic's report into an error naming the parameter."""
        try:
            return cls(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            param = str(err["loc"][0]) if err["loc"] else "parameters"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                valid = ", ".join(cls.model_fields)
                raise InvalidParameterError(param, err.get("input"), "unknown parameter", valid) from None
            raise InvalidParameterError(param, values.get(param, err.get("input")), msg) from None

    def flow_parameters(self) -> dict[str, Any]:
        """JSON-safe parameters of the flow run (no envs, no runtime)."""
        return self.model_dump(mode="json", exclude=set(NON_COMPUTING))


def _check_epsg(value: int) -> int:
    try:
        crs = CRS.from_epsg(value)
    except CRSError:
        raise ValueError("not a known EPSG code; use a code such as 3857, 4326 or 326xx for UTM north") from None
    if not (crs.is_projected or crs.is_geographic):
        raise ValueError(f"EPSG:{value} is not a horizontal CRS a raster grid can use")
    return value


class BuildGtiMosaicParams(WorkflowParams):
    gti: str = Field(min_length=1)
    aoi: str = Field(min_length=1)
    bands: list[str] = Field(min_length=1)
    location_field: str = Field(min_length=1)
    crs_epsg: int = 3857
    time_column: str | None = None
    skip_xy_coords: bool = False
    xy_chunksize: int = 512
    shard_size_bytes: int = 3_500_000_000
    query: str | None = None
    requester_pays: bool = False
    sort_field: str | None = None
    resampling: ResamplingMethod = ResamplingMethod.NEAREST
    resolution: float | None = None
    nodata: float | None = None

    @field_validator("bands")
    @classmethod
    def _unique_bands(cls, value: list[str]) -> list[str]:
        dupes = sorted({b for b in value if value.count(b) > 1})
        if dupes:
            raise ValueError(f"band names must be unique; repeated: {dupes}")
        if any(not b for b in value):
            raise ValueError("band names must be non-empty")
        return value

    @field_validator("crs_epsg")
    @classmethod
    def _epsg(cls, value: int) -> int:
        return _check_epsg(value)

    @field_validator("xy_chunksize")
    @classmethod
    def _chunksize(cls, value: int) -> int:
        if not 16 <= value <= 16384:
            raise ValueError("must be between 16 and 16384 pixels (512 is a good default)")
        return value

    @field_validator("shard_size_bytes")
    @classmethod
    def _shard_size(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be a positive number of bytes")
        return value

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: float | None) -> float | None:
        if value is not None and not value > 0:
            raise ValueError("must be a positive size in units of the target CRS, or None for native")
        return value

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                validate_query_syntax(value)
            except InvalidParameterError as exc:
                raise ValueError(exc.problem) from None
        return value

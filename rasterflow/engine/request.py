"""Requests: what a workflow is asked to compute, checked before anything runs.

Each workflow's engine subpackage declares its request model in its
``request.py``: one field per parameter, with its type, default, constraints
and description. That declaration is the only one: ``rasterflow.params`` adds
where a run executes (runtime, envs), the CLI builds its options and help from
the fields, docs/workflows.md its parameter tables, and tests check that the
client's and the flows' signatures agree with it.

Validation here needs no I/O (types, ranges, EPSG codes, query syntax), so a
wrong call fails in the caller, before a flow run exists. Checks that need the
inputs (bands present, AOI over the tiles) belong to each workflow's plan.

The shared types below are the parameters several workflows take; a request
narrows a description with ``Annotated[Type, Field(description=...)]``.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pyproj import CRS
from pyproj.exceptions import CRSError

from ..errors import InvalidParameterError, is_secret
from .warp import GDAL_ERROR_THRESHOLD

# Uncompressed bytes of one shard (RasterFlow's default): big shards suit object storage.
DEFAULT_SHARD_SIZE_BYTES = 3_500_000_000
DEFAULT_XY_CHUNKSIZE = 512
DEFAULT_CRS_EPSG = 3857
DEFAULT_WARP_ERROR_THRESHOLD = GDAL_ERROR_THRESHOLD  # gdalwarp's -et


class Request(BaseModel):
    """Base of every workflow's request: frozen, no unknown keys, errors naming the parameter."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Newer names of parameters (RasterFlow's 2026 keywords) -> the parameter they name.
    RENAMED: ClassVar[dict[str, str]] = {}

    @classmethod
    def parse(cls, **values: Any) -> Self:
        """Validate, turning pydantic's report into an ``InvalidParameterError`` naming the parameter.

        A parameter may be given by its newer name (``RENAMED``), not by both.
        """
        for new, old in cls.RENAMED.items():
            if new in values:
                if values.get(old) is not None:
                    raise cls.given_twice(new, values[new])
                values = {k: v for k, v in values.items() if k != new} | {old: values[new]}
        try:
            return cls(**values)
        except ValidationError as exc:
            raise invalid_parameter(exc, cls, values) from None

    @classmethod
    def given_twice(cls, new: str, value: Any) -> InvalidParameterError:
        """The error for a parameter given by both its names (``RENAMED``)."""
        old = cls.RENAMED[new]
        return InvalidParameterError(new, value, f"{old} is given too; {new} is RasterFlow's newer name for "
                                     f"{old}: give one of them")

    def fingerprint_parameters(self) -> dict[str, Any]:
        """The request as JSON: what it computes, for request ids and provenance.

        Fields declared ``exclude=True`` (where a run executes, its secrets) are not in it.
        """
        return self.model_dump(mode="json")


class CrsRequest(Request):
    """A request whose output CRS is ``crs_epsg`` (RasterFlow's first API) or ``target_crs`` (its 2026 one).

    Subclasses declare both fields (``CrsEpsg``, ``TargetCrs``, ``crs_epsg`` first);
    giving both is an error naming ``target_crs``. Either way, the request
    computes the same thing and gets the same request id: ``fingerprint_parameters``
    names the CRS once, by its EPSG code when it is exactly one.
    """

    # The output CRS when neither is given; None: the workflow chooses (a recipe: the datasets' own).
    DEFAULT_CRS: ClassVar[int | None] = DEFAULT_CRS_EPSG

    @field_validator("target_crs", check_fields=False)
    @classmethod
    def _one_crs(cls, value: int | str | None, info: ValidationInfo) -> int | str | None:
        given = info.data.get("crs_epsg")
        if value is not None and given is not None:
            raise ValueError(f"crs_epsg={given} is given too: give the CRS once, as target_crs (any CRS "
                             "pyproj reads) or as crs_epsg (an EPSG code)")
        return value

    @property
    def output_crs(self) -> CRS | None:
        """The output grid's CRS (pyproj); None when the workflow chooses it."""
        chosen = getattr(self, "crs_epsg", None) or getattr(self, "target_crs", None) or self.DEFAULT_CRS
        return None if chosen is None else CRS.from_user_input(chosen)

    def fingerprint_parameters(self) -> dict[str, Any]:
        params = super().fingerprint_parameters()
        crs = self.output_crs
        epsg = None if crs is None else crs.to_epsg(min_confidence=100)
        params["crs_epsg"] = epsg
        params["target_crs"] = None if crs is None or epsg is not None else crs.to_wkt()
        return params


def invalid_parameter(exc: ValidationError, model: type[BaseModel],
                      values: dict[str, Any]) -> InvalidParameterError:
    """The first problem of ``exc`` as an error naming its parameter, its value and what is valid."""
    err = exc.errors()[0]
    param = str(err["loc"][0]) if err["loc"] else "parameters"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return InvalidParameterError(param, err.get("input"), "unknown parameter",
                                     ", ".join(model.model_fields))
    if is_secret(param) and len(err["loc"]) > 1:  # envs: say which key; the value is masked
        message = f"the value of {err['loc'][1]!r}: {message}"
    return InvalidParameterError(param, values.get(param, err.get("input")), message)


def description(model: type[BaseModel], name: str) -> str:
    """A field's description, whitespace folded."""
    return " ".join((model.model_fields[name].description or "").split())


# ---------------------------------------------------------------- validators


def check_epsg(value: int) -> int:
    from pyproj import CRS  # here: the command line imports this module to build its options
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_epsg(value)
    except CRSError:
        raise ValueError("not a known EPSG code; use a code such as 3857, 4326 or 326xx for UTM "
                         "north") from None
    if not (crs.is_projected or crs.is_geographic):
        raise ValueError(f"EPSG:{value} is not a horizontal CRS a raster grid can use")
    return value


def check_crs(value: int | str, use: str = "a raster grid can use",
              examples: str = "an EPSG code (32610), 'EPSG:32610', another authority's code ('ESRI:54009') "
                              "or WKT") -> int | str:
    """Anything pyproj reads (an EPSG code, ``AUTH:CODE``, WKT, PROJJSON, a PROJ string), horizontal."""
    try:
        crs = CRS.from_user_input(value)
    except CRSError:
        raise ValueError(f"not a CRS pyproj reads; give {examples}") from None
    if not (crs.is_projected or crs.is_geographic):
        raise ValueError(f"is not a horizontal CRS {use}")
    return value


def _digits_as_code(value: Any) -> Any:
    """'32610' (as the command line gives it) is the EPSG code 32610, as pyproj takes the int."""
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


def unique_names(what: str):
    """A validator: names given once each, none empty."""

    def check(value: list[str]) -> list[str]:
        dupes = sorted({v for v in value if value.count(v) > 1})
        if dupes:
            raise ValueError(f"{what} names must be unique; repeated: {dupes}")
        if any(not v for v in value):
            raise ValueError(f"{what} names must be non-empty")
        return value

    return check


def finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _day(value: Any) -> Any:
    """A datetime stands for the day it falls on (RasterFlow's API takes datetimes)."""
    return value.date() if isinstance(value, datetime) else value


def end_not_before_start(end: date, start: date | None) -> date:
    if start is not None and end < start:
        raise ValueError(f"must not be before start={start.isoformat()}")
    return end


# ---------------------------------------------------------------- shared parameter types

def _chunk_size(value: int) -> int:
    if not 16 <= value <= 16384:
        raise ValueError("must be between 16 and 16384 pixels (512 is a good default)")
    return value


def _positive_bytes(value: int) -> int:
    if value <= 0:
        raise ValueError("must be a positive number of bytes")
    return value


def _error_threshold(value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError("must be a finite number of pixels, 0 or more (0: exact; gdalwarp's default is "
                         "0.125)")
    return value


def _resolution(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError("must be a positive size in units of the target CRS, or None for native")
    return value


# Constraints checked by the validators (messages that say what is valid) and
# published in the JSON schema too (forms in the Prefect UI).
Uri = Annotated[str, Field(min_length=1)]
Aoi = Annotated[Uri, Field(description=(
    "Area of interest: any vector file geopandas reads (GeoJSON, GeoParquet, GeoPackage, ...). One output "
    "store per geometry; pixels whose centre lies outside it are nodata. Edges are densified before "
    "reprojection."))]
StoreOrIndex = Annotated[Uri, Field(description=(
    "A Zarr store URI, or an index GeoParquet whose 'location' column lists stores (what every workflow "
    "returns); every store it names is processed."))]
EpsgCode = Annotated[int, AfterValidator(check_epsg), Field(description="EPSG code of the output grid.")]
CrsEpsg = Annotated[int | None, AfterValidator(lambda v: None if v is None else check_epsg(v)), Field(
    description=(
        "EPSG code of the output grid (RasterFlow's first API; `target_crs` is its 2026 name and takes any "
        "CRS). Give one of the two. None with no `target_crs`: EPSG:3857."))]
TargetCrs = Annotated[int | str | None, BeforeValidator(_digits_as_code),
                      AfterValidator(lambda v: None if v is None else check_crs(v)), Field(description=(
    "CRS of the output grid, anything pyproj reads: an EPSG code (`32610`), `EPSG:32610`, another "
    "authority's code, WKT or PROJJSON (RasterFlow's 2026 name for `crs_epsg`; give one of the two). "
    "None with no `crs_epsg`: EPSG:3857."))]
ChunkSize = Annotated[int, AfterValidator(_chunk_size), Field(
    json_schema_extra={"minimum": 16, "maximum": 16384},
    description="Zarr chunk size in x and y, in pixels (16..16384). A chunk holds every band of one time "
                "slice.")]
ShardBytes = Annotated[int, AfterValidator(_positive_bytes), Field(
    json_schema_extra={"exclusiveMinimum": 0},
    description="Uncompressed size budget of one shard (whole chunks, near-square), in bytes: the unit one "
                "task writes whole. Large shards suit object storage.")]
Resolution = Annotated[float | None, AfterValidator(_resolution), Field(description=(
    "Pixel size in units of the target CRS. None: the finest native resolution of the inputs."))]
WarpErrorThreshold = Annotated[float, AfterValidator(_error_threshold), Field(
    json_schema_extra={"minimum": 0},
    description="Error threshold of GDAL's approximate coordinate transformer, in pixels (`gdalwarp "
                "-et`; 0.125 as gdalwarp). 0 transforms every pixel exactly with PROJ, as `gdalwarp -et 0`: "
                "the same pixels as gdalwarp, at several times the warp's CPU. Whatever the value, warps run "
                "on a fixed lattice of the output grid, so shards, workers and task runners never change a "
                "pixel.")]
SkipXyCoords = Annotated[bool, Field(description=(
    "Write no `x`/`y` coordinate arrays; the transform stays in `spatial_ref` and the `spatial:transform` "
    "attribute."))]
BandNames = Annotated[list[str], Field(min_length=1), AfterValidator(unique_names("band"))]
Day = Annotated[date, BeforeValidator(_day)]
BlockMultiplier = Annotated[int, Field(ge=1, le=64, description=(
    "Store chunks per block side: the unit one task reads and processes (it bounds memory, never the "
    "result)."))]

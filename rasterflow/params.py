"""One pydantic model per workflow, shared by the client, the flows and the CLI.

They check what can be checked without I/O (types, ranges, EPSG codes, query
syntax), so a wrong call fails in the caller before any flow run exists. Checks
that need the inputs (bands present, AOI overlaps tiles) run in the flow's plan
step, still before anything is written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pyproj import CRS
from pyproj.exceptions import CRSError

from .engine.query import validate_query_syntax
from .enums import (
    DatasetEnum, InferenceActorEnum, MergeModeEnum, ModelRecipes, ResamplingMethod, RuntimeEnum, VectorizeMethodEnum,
)
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


def _day(value: Any) -> Any:
    """A datetime stands for the day it falls on (RasterFlow's API takes datetimes)."""
    return value.date() if isinstance(value, datetime) else value


def _not_before_start(end: date, start: date | None) -> date:
    if start is not None and end < start:
        raise ValueError(f"must not be before start={start.isoformat()}")
    return end


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


class VectorizeConfig(BaseModel):
    """The keys of ``vectorize_mosaic``'s ``vectorize_config`` (docs/workflows.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stats: bool = True  # score_mean: the feature's mean over each polygon's pixels
    connectivity: Literal[4, 8] = 4  # as GDAL's polygonize: edge neighbours, or corners too
    min_area: float = Field(default=0.0, ge=0)  # squared units of the store's CRS
    simplify_tolerance: float = Field(default=0.0, ge=0)  # units of the store's CRS


class VectorizeMosaicParams(WorkflowParams):
    store: str = Field(min_length=1)
    features: list[str] = Field(min_length=1)
    threshold: float
    vectorize_method: VectorizeMethodEnum = VectorizeMethodEnum.SEMANTIC_SEGMENTATION_RASTERIO
    vectorize_config: VectorizeConfig = Field(default_factory=VectorizeConfig)
    xy_block_multiplier: int = Field(default=4, ge=1, le=64)
    vector_crs: str | None = "EPSG:4326"

    @field_validator("features")
    @classmethod
    def _unique_features(cls, value: list[str]) -> list[str]:
        dupes = sorted({f for f in value if value.count(f) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique; repeated: {dupes}")
        return value

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number (pixels with value >= threshold are foreground)")
        return value

    @field_validator("vectorize_config", mode="before")
    @classmethod
    def _config(cls, value: Any) -> Any:
        """Errors name the offending key; pydantic's would name the nested model."""
        if value is None or isinstance(value, VectorizeConfig):
            return value or VectorizeConfig()
        known = ", ".join(VectorizeConfig.model_fields)
        if not isinstance(value, Mapping):
            raise ValueError(f"must be a mapping with keys among: {known}")
        unknown = sorted(str(k) for k in value if k not in VectorizeConfig.model_fields)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; known keys: {known}")
        try:
            return VectorizeConfig(**value)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = err["loc"][0] if err["loc"] else "?"
            raise ValueError(f"{key}={err.get('input')!r}: {err['msg']}") from None

    @field_validator("vector_crs")
    @classmethod
    def _crs(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            crs = CRS.from_user_input(value)
        except CRSError:
            raise ValueError("not a CRS pyproj understands; use e.g. 'EPSG:4326', 'EPSG:3857', "
                             "or None to keep the store's CRS") from None
        if not (crs.is_projected or crs.is_geographic):
            raise ValueError("is not a horizontal CRS polygons can be written in")
        return value


def _unique_names(value: list[str], what: str) -> list[str]:
    dupes = sorted({v for v in value if value.count(v) > 1})
    if dupes:
        raise ValueError(f"{what} names must be unique; repeated: {dupes}")
    if any(not v for v in value):
        raise ValueError(f"{what} names must be non-empty")
    return value


class PredictMosaicParams(WorkflowParams):
    store: str = Field(min_length=1)
    model_path: str = Field(min_length=1)
    patch_size: int = Field(ge=8, le=8192)
    clip_size: int = Field(ge=0)
    device: str
    features: list[str] = Field(min_length=1)
    labels: list[str] = Field(min_length=1)
    actor: InferenceActorEnum
    max_batch_size: int = Field(ge=1, le=65536)
    merge_mode: MergeModeEnum
    select_labels: list[str] | None = None
    xy_block_multiplier: int = Field(default=4, ge=1, le=64)
    output_xy_chunksize: int | None = None

    @field_validator("clip_size")
    @classmethod
    def _clip(cls, value: int, info) -> int:
        patch = info.data.get("patch_size")
        if patch is not None and 2 * value >= patch:
            raise ValueError(f"2 * clip_size must be less than patch_size={patch} so each patch keeps a centre "
                             f"(valid: 0..{(patch - 1) // 2}, and at least the model's receptive-field radius)")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", value):
            raise ValueError("must be 'cpu', 'cuda' (or 'cuda:N'), or 'auto' (a GPU when there is one)")
        return value

    @field_validator("features")
    @classmethod
    def _features(cls, value: list[str]) -> list[str]:
        return _unique_names(value, "feature")

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        return _unique_names(value, "label")

    @field_validator("select_labels")
    @classmethod
    def _select(cls, value: list[str] | None, info) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must name at least one label, or be None to write them all")
        _unique_names(value, "label")
        labels = info.data.get("labels") or []
        unknown = [v for v in value if v not in labels]
        if unknown:
            raise ValueError(f"{unknown} not among labels {labels}")
        return value

    @field_validator("output_xy_chunksize")
    @classmethod
    def _chunksize(cls, value: int | None) -> int | None:
        if value is not None and not 16 <= value <= 16384:
            raise ValueError("must be between 16 and 16384 pixels, or None for the input store's chunk size")
        return value


class BuildZarrMultiscalesParams(WorkflowParams):
    store: str = Field(min_length=1)
    levels: int | None = None
    resampling: ResamplingMethod | dict[str, ResamplingMethod] | None = None

    @field_validator("levels")
    @classmethod
    def _levels(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError("must be at least 1 (level 0 alone), or None for levels down to one chunk")
        return value

    @field_validator("resampling")
    @classmethod
    def _overview_kernels(cls, value):
        supported = (ResamplingMethod.AVERAGE, ResamplingMethod.NEAREST, ResamplingMethod.MODE)
        methods = value.values() if isinstance(value, dict) else [value] if value is not None else []
        unsupported = sorted({m.value for m in methods if m not in supported})
        if unsupported:
            raise ValueError(f"{unsupported} cannot build overviews; use average, near or mode "
                             "(one method, or a mapping band -> method)")
        return value


class BuildMosaicParams(WorkflowParams):
    datasets: list[DatasetEnum] = Field(min_length=1)
    aoi: str = Field(min_length=1)
    start: date
    end: date
    crs_epsg: int = 3857
    xy_chunksize: int = Field(default=512, ge=16, le=16384)
    shard_size_bytes: int = Field(default=3_500_000_000, gt=0)
    resolution: float | None = Field(default=None, gt=0)
    skip_xy_coords: bool = False

    @field_validator("datasets")
    @classmethod
    def _unique_datasets(cls, value: list[DatasetEnum]) -> list[DatasetEnum]:
        dupes = sorted({d.value for d in value if value.count(d) > 1})
        if dupes:
            raise ValueError(f"each dataset once; repeated: {dupes}")
        return value

    @field_validator("crs_epsg")
    @classmethod
    def _epsg(cls, value: int) -> int:
        return _check_epsg(value)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _days(cls, value: Any) -> Any:
        return _day(value)

    @field_validator("end")
    @classmethod
    def _ordered(cls, value: date, info) -> date:
        return _not_before_start(value, info.data.get("start"))


class BuildAndPredictMosaicRecipeParams(WorkflowParams):
    aoi: str = Field(min_length=1)
    start: date
    end: date
    model_recipe: ModelRecipes
    model_path: str = Field(min_length=1)  # the recipe's weights, or the config's recipe_models entry
    crs_epsg: int | None = None

    @field_validator("start", "end", mode="before")
    @classmethod
    def _days(cls, value: Any) -> Any:
        return _day(value)

    @field_validator("crs_epsg")
    @classmethod
    def _epsg(cls, value: int | None) -> int | None:
        return None if value is None else _check_epsg(value)

    @field_validator("end")
    @classmethod
    def _ordered(cls, value: date, info) -> date:
        return _not_before_start(value, info.data.get("start"))

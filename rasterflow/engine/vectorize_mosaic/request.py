"""What vectorize_mosaic takes: stores, the bands to threshold, and how to polygonize them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from ...enums import VectorizeMethodEnum
from ..request import BlockMultiplier, Request, StoreOrIndex, unique_names

DEFAULT_BLOCK_MULTIPLIER = 4
DEFAULT_VECTOR_CRS = "EPSG:4326"


class VectorizeConfig(BaseModel):
    """The keys of ``vectorize_config`` (docs/workflows.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stats: bool = Field(default=True,
                        description="score_mean: the feature's mean over each polygon's pixels.")
    connectivity: Literal[4, 8] = Field(default=4, description=(
        "As GDAL's polygonize: 4 joins edge neighbours, 8 corners too."))
    min_area: float = Field(default=0.0, ge=0,
                            description="Smallest polygon kept, in squared units of the store's CRS.")
    simplify_tolerance: float = Field(default=0.0, ge=0, description=(
        "Douglas-Peucker tolerance in units of the store's CRS (topology kept); 0: exact pixel edges."))


def _vectorize_config(value: Any) -> Any:
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


def _threshold(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number (pixels with value >= threshold are foreground)")
    return value


def _vector_crs(value: str | None) -> str | None:
    if value is None:
        return None
    from pyproj import CRS  # here: the command line imports this module to build its options
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_user_input(value)
    except CRSError:
        raise ValueError("not a CRS pyproj understands; use e.g. 'EPSG:4326', 'EPSG:3857', "
                         "or None to keep the store's CRS") from None
    if not (crs.is_projected or crs.is_geographic):
        raise ValueError("is not a horizontal CRS polygons can be written in")
    return value


class VectorizeMosaicRequest(Request):
    store: Annotated[StoreOrIndex, Field(description=(
        "A store URI (any store of the store contract: a mosaic, a prediction), or an index GeoParquet (any "
        "workflow's answer): every store in its `location` column is vectorized into the one result. Stores "
        "of an index are never joined to each other: overlapping stores give overlapping polygons."))]
    features: Annotated[list[str], Field(min_length=1), AfterValidator(unique_names("feature")), Field(
        description="Bands to polygonize, each on its own; a band's name is its polygons' `label`.")]
    threshold: Annotated[float, AfterValidator(_threshold), Field(description=(
        "A pixel is foreground when its value >= `threshold`; nodata (the store's fill value, NaN for "
        "predictions) never is. Connected foreground becomes one polygon, whatever block borders it "
        "crosses."))]
    vectorize_method: Annotated[VectorizeMethodEnum, Field(description=(
        "The vectorizer. `SEMANTIC_SEGMENTATION_RASTERIO`, the only one: threshold, then GDAL's "
        "polygonize."))] = VectorizeMethodEnum.SEMANTIC_SEGMENTATION_RASTERIO
    vectorize_config: Annotated[VectorizeConfig, BeforeValidator(_vectorize_config), Field(description=(
        "A mapping; unknown keys are errors. `stats` (default true): compute `score_mean`. `connectivity` "
        "(4, default, or 8): pixels touching by an edge, or also by a corner, are one region (GDAL's "
        "`8CONNECTED`). `min_area` (default 0): drop polygons smaller than this, in squared units of the "
        "store's CRS, after merging across blocks. `simplify_tolerance` (default 0): Douglas-Peucker "
        "tolerance in units of the store's CRS, topology preserved, after merging and before "
        "reprojection."))] = Field(default_factory=VectorizeConfig)
    xy_block_multiplier: Annotated[BlockMultiplier, Field(description=(
        "Store chunks per block side (1..64): a block is one polygonize task. It bounds a task's memory and "
        "never changes the result."))] = DEFAULT_BLOCK_MULTIPLIER
    vector_crs: Annotated[str | None, AfterValidator(_vector_crs), Field(description=(
        "CRS of the output geometries, anything pyproj reads (`EPSG:4326`). None keeps the store's CRS (the "
        "stores of an index must then share one). Vertices are reprojected as they are, edges are not "
        "densified."))] = DEFAULT_VECTOR_CRS

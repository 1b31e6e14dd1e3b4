"""What build_and_predict_mosaic_recipe takes: an area, a period and a model recipe."""

from __future__ import annotations

from datetime import date
from typing import Annotated, ClassVar

from pydantic import Field, ValidationInfo, field_validator

from ...enums import ModelRecipes
from ..request import Aoi, CrsEpsg, CrsRequest, Day, TargetCrs, Uri, end_not_before_start

_NATIVE = ("None (and no `{}`): the datasets' native CRS, the UTM zone of the AOI's centroid (Sentinel-2 and "
           "NAIP are delivered in UTM), so an AOI inside one zone is not resampled; an AOI across zones (or "
           "the equator) takes the centroid's zone and the run logs a warning.")


class BuildAndPredictMosaicRecipeRequest(CrsRequest):
    DEFAULT_CRS: ClassVar[int | None] = None  # the datasets' native CRS, chosen by the flow
    aoi: Annotated[Aoi, Field(description=(
        "Area of interest: any vector file geopandas reads, local or remote; one prediction store per "
        "geometry."))]
    start: Annotated[Day, Field(description=(
        "First day of the period (a `datetime`, a `date` or `YYYY-MM-DD`; a datetime stands for its day), "
        "inclusive. One time slice per calendar year, within the seasons the recipe's datasets use."))]
    end: Annotated[Day, Field(description="Last day of the period, inclusive.")]
    model_recipe: Annotated[ModelRecipes, Field(description=(
        "The recipe (ModelRecipes): datasets, feature bands in model order, labels and inference settings "
        "that belong together."))]
    model_path: Annotated[Uri, Field(description=(
        "The recipe's weights: the config's recipe_models entry (a mirror, a local file), else the recipe's "
        "public URI. The client sets it; a run started from a form or a schedule without one takes the "
        "workers' config the same way."))]
    crs_epsg: Annotated[CrsEpsg, Field(description=(
        "EPSG code of the output grid (RasterFlow's first API; `target_crs` is its 2026 name and takes any "
        "CRS; give one of the two). " + _NATIVE.format("target_crs")))] = None
    target_crs: Annotated[TargetCrs, Field(description=(
        "CRS of the output grid, anything pyproj reads (RasterFlow's 2026 name for `crs_epsg`; give one of "
        "the two). " + _NATIVE.format("crs_epsg")))] = None

    @field_validator("end")
    @classmethod
    def _ordered(cls, value: date, info: ValidationInfo) -> date:
        return end_not_before_start(value, info.data.get("start"))

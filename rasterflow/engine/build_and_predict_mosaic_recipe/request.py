"""What build_and_predict_mosaic_recipe takes: an area, a period and a model recipe."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from ...enums import ModelRecipes
from ..request import Aoi, Day, Request, Uri, check_epsg, end_not_before_start


def _optional_epsg(value: int | None) -> int | None:
    return None if value is None else check_epsg(value)


class BuildAndPredictMosaicRecipeRequest(Request):
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
    crs_epsg: Annotated[int | None, AfterValidator(_optional_epsg), Field(description=(
        "EPSG code of the output grid. None: the datasets' native CRS, the UTM zone of the AOI's centroid "
        "(Sentinel-2 and NAIP are delivered in UTM), so an AOI inside one zone is not resampled; an AOI "
        "across zones (or the equator) takes the centroid's zone and the run logs a warning."))] = None

    @field_validator("end")
    @classmethod
    def _ordered(cls, value: date, info: ValidationInfo) -> date:
        return end_not_before_start(value, info.data.get("start"))

"""Tasks of build-and-predict-mosaic-recipe (the rest of its work is two subflows)."""

from __future__ import annotations

from prefect import get_run_logger, task

from ..config import current_config
from ..engine.build_and_predict_mosaic_recipe.check import check_recipe_model
from ..engine.build_and_predict_mosaic_recipe.recipes import aoi_native_crs
from ..enums import ModelRecipes


@task(name="choose-crs", persist_result=False)
def choose_crs(aoi: str) -> int:
    """The recipe datasets' native CRS over the AOI: the UTM zone of its centroid."""
    epsg, spans = aoi_native_crs(aoi, current_config().storage_options_for(aoi))
    if spans:
        get_run_logger().warning(
            "the AOI spans UTM zones (or the equator); using EPSG:%d, the zone of its centroid: "
            "pass target_crs (or crs_epsg) to choose another", epsg,
        )
    return epsg


@task(name="check-model", persist_result=False)
def check_model_task(recipe: ModelRecipes, model_path: str) -> None:
    """The model is safe and has the recipe's contract: checked before the costly mosaic is built."""
    check_recipe_model(recipe, model_path, current_config().storage_options_for)

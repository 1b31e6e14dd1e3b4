"""Tasks of build-and-predict-mosaic-recipe (the rest of its work is two subflows)."""

from __future__ import annotations

from prefect import get_run_logger, task

from ..config import current_config
from ..engine.build_and_predict_mosaic_recipe.check import check_recipe_model
from ..engine.build_and_predict_mosaic_recipe.recipes import RecipeSpec, aoi_native_crs, recipe_summary
from ..engine.index import read_index
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


@task(name="summarize-recipe", persist_result=False)
def summarize_recipe(spec: RecipeSpec, model_path: str, mosaic: str, predictions: str, crs: str) -> str:
    """The summary's text, with the model named by the bytes that ran (the predictions index's sha256)."""
    config = current_config()
    index = read_index(predictions, config.storage_options_for(predictions))
    sha = str(index.model_sha256.iloc[0]) if len(index) else ""
    mirrored = spec.recipe in config.recipe_models
    return recipe_summary(spec, model_path, sha, mosaic, predictions, crs, mirrored)


"""build-and-predict-mosaic-recipe: one call from an area and dates to predictions.

choose-crs (unless given) -> build-mosaic (subflow: the recipe's datasets over
the AOI) -> predict-mosaic (subflow: the recipe's model over every store of
that mosaic's index) -> summarize-recipe (names the model that ran: a bundled
stand-in is never called the public model). Both subflows are ordinary runs of those flows, shown
nested under this one in the Prefect UI, with their own caching: an identical
call lands on the same content-addressed stores and its cached tasks.
"""

from __future__ import annotations

from datetime import date

from prefect import flow

from ..engine.build_and_predict_mosaic_recipe.recipes import recipe_spec
from ..engine.build_and_predict_mosaic_recipe.request import BuildAndPredictMosaicRecipeRequest
from ..enums import ModelRecipes
from ..tasks.build_and_predict_mosaic_recipe import choose_crs, summarize_recipe
from ..tasks.publish import publish_stores
from .build_mosaic import build_mosaic_flow
from .predict_mosaic import predict_mosaic_flow
from .runtime import announce_run


@flow(name="build-and-predict-mosaic-recipe", validate_parameters=True, persist_result=True)
def build_and_predict_mosaic_recipe_flow(
    aoi: str,
    start: date,
    end: date,
    model_recipe: ModelRecipes,
    model_path: str,
    crs_epsg: int | None = None,
) -> str:
    """Mosaic the recipe's datasets and run its model; returns the prediction index URI."""
    request = BuildAndPredictMosaicRecipeRequest.parse(**locals())
    announce_run()
    recipe = recipe_spec(request.model_recipe)
    epsg = request.crs_epsg if request.crs_epsg is not None else choose_crs(request.aoi)
    mosaic = build_mosaic_flow(
        datasets=list(recipe.datasets), aoi=request.aoi, start=request.start, end=request.end, crs_epsg=epsg,
        resolution=recipe.resolution,
    )
    predictions = predict_mosaic_flow(
        store=mosaic, model_path=request.model_path, patch_size=recipe.patch_size, clip_size=recipe.clip_size,
        device="auto", features=list(recipe.features), labels=list(recipe.labels), actor=recipe.actor,
        max_batch_size=recipe.max_batch_size, merge_mode=recipe.merge_mode,
    )
    summary = summarize_recipe(recipe, request.model_path, mosaic, predictions, epsg)
    publish_stores("build-and-predict-mosaic-recipe", predictions, summary)
    return predictions

"""build-and-predict-mosaic-recipe: one call from an area and dates to predictions.

check-model (the model's format and contract, before anything costly) ->
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

from ..config import RunConfig, current_config
from ..engine.build_and_predict_mosaic_recipe.recipes import aoi_native_crs, recipe_spec, write_packaged_model
from ..engine.build_and_predict_mosaic_recipe.request import BuildAndPredictMosaicRecipeRequest
from ..engine.build_mosaic.request import BuildMosaicRequest
from ..engine.plan import PlanReport, combined_report
from ..engine.predict_mosaic.plan import patch_seconds, plan_on_stores
from ..engine.predict_mosaic.request import PredictMosaicRequest
from ..engine.store import planned_description
from ..enums import ModelRecipes
from ..tasks.build_and_predict_mosaic_recipe import check_model_task, choose_crs, summarize_recipe
from ..tasks.build_mosaic import plan_partitions as plan_mosaic
from ..tasks.build_mosaic import search_catalog_task
from ..tasks.publish import publish_stores
from .build_mosaic import build_mosaic_flow
from .predict_mosaic import predict_mosaic_flow
from .runtime import announce_run, request_arguments, run_configuration


@flow(name="build-and-predict-mosaic-recipe", validate_parameters=True, persist_result=True)
def build_and_predict_mosaic_recipe_flow(
    aoi: str,
    start: date,
    end: date,
    model_recipe: ModelRecipes,
    model_path: str | None = None,
    crs_epsg: int | None = None,
    target_crs: int | str | None = None,
    run_config: RunConfig | None = None,
) -> str:
    """Mosaic the recipe's datasets and run its model; returns the prediction index URI."""
    arguments = request_arguments(locals())
    config = run_configuration(run_config)
    announce_run()
    if model_path is None:  # a run from the UI or a schedule: the recipe's weights, or the config's mirror
        arguments["model_path"] = config.recipe_model(ModelRecipes(model_recipe))
    request = BuildAndPredictMosaicRecipeRequest.parse(**arguments)
    recipe = recipe_spec(request.model_recipe)
    if model_path is None and recipe.packaged and request.model_recipe not in config.recipe_models:
        # weights from the worker's installed package, written once under its output root
        write_packaged_model(recipe, request.model_path, config.storage_options_for(request.model_path))
    check_model_task(request.model_recipe, request.model_path)
    crs = ({"crs_epsg": choose_crs(request.aoi)} if request.output_crs is None
           else {"crs_epsg": request.crs_epsg, "target_crs": request.target_crs})
    mosaic = build_mosaic_flow(**recipe.mosaic_parameters(request.aoi, request.start, request.end, crs))
    predictions = predict_mosaic_flow(**recipe.predict_parameters(mosaic, request.model_path))
    summary = summarize_recipe(recipe, request.model_path, mosaic, predictions, shown_crs(crs))
    publish_stores("build-and-predict-mosaic-recipe", predictions, summary)
    return predictions


def shown_crs(crs: dict) -> str:
    return f"EPSG:{crs['crs_epsg']}" if crs.get("crs_epsg") else str(crs["target_crs"])[:60]


def dry_run(request: BuildAndPredictMosaicRecipeRequest, workers: int) -> PlanReport:
    """Both subflows planned as they plan, reported and not run (``RasterflowClient(dry_run=True)``).

    The prediction is planned on the stores the mosaic would write, described
    from its plan (they do not exist yet): its blocks, patches and timed model
    are those of the run; its request id is not (that hashes the written
    stores' identities).
    """
    config = current_config()
    recipe = recipe_spec(request.model_recipe)
    native = request.output_crs is None
    crs = ({"crs_epsg": aoi_native_crs(request.aoi, config.storage_options_for(request.aoi))[0]} if native
           else {"crs_epsg": request.crs_epsg, "target_crs": request.target_crs})
    mosaic_request = BuildMosaicRequest.parse(**recipe.mosaic_parameters(request.aoi, request.start,
                                                                           request.end, crs))
    mosaic = plan_mosaic.fn(mosaic_request, search_catalog_task.fn(mosaic_request), config.output_uri)
    predict_request = PredictMosaicRequest.parse(**recipe.predict_parameters(mosaic.index_uri,
                                                                             request.model_path))
    sources = [planned_description(s.spec, s.fingerprint) for s in mosaic.stores]
    prediction = plan_on_stores(predict_request, sources, config.output_uri, config.storage_options_for)
    seconds = patch_seconds(predict_request, prediction.stores[0].jobs[0].spec.batch_size,
                            config.storage_options_for)
    return combined_report("build-and-predict-mosaic-recipe",
                           [mosaic.report(workers), prediction.report(workers, seconds)], {"choose-crs": 1})

"""Tasks of build-and-predict-mosaic-recipe (the rest of its work is two subflows)."""

from __future__ import annotations

from prefect import get_run_logger, task

from ..config import current_config
from ..engine.build_and_predict_mosaic_recipe.recipes import RecipeSpec, native_crs_epsg, recipe_summary
from ..engine.index import read_index
from ..engine.vectors import read_vector


@task(name="choose-crs", persist_result=False)
def choose_crs(aoi: str) -> int:
    """The recipe datasets' native CRS over the AOI: the UTM zone of its centroid."""
    frame = read_vector(aoi, "aoi", current_config().storage_options_for(aoi))
    epsg, spans = native_crs_epsg(frame.to_crs(4326).union_all())
    if spans:
        get_run_logger().warning(
            "the AOI spans UTM zones (or the equator); using EPSG:%d, the zone of its centroid: "
            "pass crs_epsg to choose another", epsg,
        )
    return epsg


@task(name="summarize-recipe", persist_result=False)
def summarize_recipe(spec: RecipeSpec, model_path: str, mosaic: str, predictions: str, crs_epsg: int) -> str:
    """The summary's text, with the model named by the bytes that ran (the predictions index's sha256)."""
    index = read_index(predictions, current_config().storage_options_for(predictions))
    sha = str(index.model_sha256.iloc[0]) if len(index) else ""
    return recipe_summary(spec, model_path, sha, mosaic, predictions, crs_epsg)


"""Tasks of build-and-predict-mosaic-recipe (the rest of its work is two subflows)."""

from __future__ import annotations

from prefect import get_run_logger, task

from ..config import current_config
from ..engine.build_and_predict_mosaic_recipe.recipes import aoi_native_crs


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

"""Prefect flows, one module per workflow; each composes tasks and nothing else."""

from collections.abc import Callable
from typing import Any

from prefect import Flow

from ..engine.plan import PlanReport
from . import (
    build_and_predict_mosaic_recipe,
    build_gti_mosaic,
    build_mosaic,
    build_zarr_multiscales,
    predict_mosaic,
    vectorize_mosaic,
)
from .build_and_predict_mosaic_recipe import build_and_predict_mosaic_recipe_flow
from .build_gti_mosaic import build_gti_mosaic_flow
from .build_mosaic import build_mosaic_flow
from .build_zarr_multiscales import build_zarr_multiscales_flow
from .predict_mosaic import predict_mosaic_flow
from .vectorize_mosaic import vectorize_mosaic_flow

FLOWS: dict[str, Flow[..., Any]] = {
    "build-mosaic": build_mosaic_flow,
    "build-gti-mosaic": build_gti_mosaic_flow,
    "build-zarr-multiscales": build_zarr_multiscales_flow,
    "predict-mosaic": predict_mosaic_flow,
    "vectorize-mosaic": vectorize_mosaic_flow,
    "build-and-predict-mosaic-recipe": build_and_predict_mosaic_recipe_flow,
}

# Each flow's plan, reported and not run: what RasterflowClient(dry_run=True) calls, by flow name.
DRY_RUNS: dict[str, Callable[[Any, int], PlanReport]] = {
    "build-mosaic": build_mosaic.dry_run,
    "build-gti-mosaic": build_gti_mosaic.dry_run,
    "build-zarr-multiscales": build_zarr_multiscales.dry_run,
    "predict-mosaic": predict_mosaic.dry_run,
    "vectorize-mosaic": vectorize_mosaic.dry_run,
    "build-and-predict-mosaic-recipe": build_and_predict_mosaic_recipe.dry_run,
}

__all__ = ["DRY_RUNS", "FLOWS", "build_and_predict_mosaic_recipe_flow", "build_mosaic_flow",
           "build_gti_mosaic_flow", "build_zarr_multiscales_flow", "predict_mosaic_flow",
           "vectorize_mosaic_flow"]

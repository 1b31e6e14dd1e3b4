"""Prefect flows, one module per workflow; each composes tasks and nothing else."""

from typing import Any

from prefect import Flow

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

__all__ = ["FLOWS", "build_and_predict_mosaic_recipe_flow", "build_mosaic_flow", "build_gti_mosaic_flow",
           "build_zarr_multiscales_flow", "predict_mosaic_flow", "vectorize_mosaic_flow"]

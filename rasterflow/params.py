"""The client's parameters per workflow: the engine's request, plus where the run executes.

Each workflow's request model (``engine/<workflow>/request.py``) declares
what it computes, once: names, types, defaults, constraints, descriptions.
Here each is joined with the two parameters of a call that are about where it
runs and its secrets, never about what it computes: ``runtime`` (the work
pool's size) and ``envs`` (environment for the reading tasks). Both are left
out of fingerprints, provenance and flow-run parameters.

The models check what can be checked without I/O (types, ranges, EPSG codes,
query syntax), so a wrong call fails in the caller before any flow run exists.
Checks that need the inputs (bands present, AOI overlaps tiles) run in the
flow's plan step, still before anything is written.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .engine.build_and_predict_mosaic_recipe.request import BuildAndPredictMosaicRecipeRequest
from .engine.build_gti_mosaic.request import BuildGtiMosaicRequest
from .engine.build_mosaic.request import BuildMosaicRequest
from .engine.build_zarr_multiscales.request import BuildZarrMultiscalesRequest
from .engine.predict_mosaic.request import PredictMosaicRequest
from .engine.vectorize_mosaic.request import VectorizeConfig, VectorizeMosaicRequest
from .enums import RuntimeEnum

# Parameters that are about where a run executes or its secrets, not what it computes.
NON_COMPUTING = frozenset({"envs", "runtime"})

__all__ = [
    "BuildAndPredictMosaicRecipeParams", "BuildGtiMosaicParams", "BuildMosaicParams",
    "BuildZarrMultiscalesParams", "NON_COMPUTING", "PARAMS", "PredictMosaicParams", "VectorizeConfig",
    "VectorizeMosaicParams", "WorkflowParams",
]


class WorkflowParams(BaseModel):
    """Where a run executes and its secrets: excluded from every dump (``exclude=True``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    runtime: RuntimeEnum = Field(default=RuntimeEnum.SMALL, exclude=True, description=(
        "Size of the machine the run needs (RuntimeEnum); with execution: deployment, the work pool it "
        "runs on."))
    envs: dict[str, str] | None = Field(default=None, repr=False, exclude=True, description=(
        "Environment for the reading tasks (GDAL/AWS options). Never logged, never in provenance or Prefect "
        "parameters."))

    def flow_parameters(self) -> dict[str, Any]:
        """JSON-safe parameters of the flow run: the request, without envs or runtime."""
        return self.model_dump(mode="json")


class BuildGtiMosaicParams(BuildGtiMosaicRequest, WorkflowParams):
    pass


class BuildMosaicParams(BuildMosaicRequest, WorkflowParams):
    pass


class VectorizeMosaicParams(VectorizeMosaicRequest, WorkflowParams):
    pass


class PredictMosaicParams(PredictMosaicRequest, WorkflowParams):
    pass


class BuildZarrMultiscalesParams(BuildZarrMultiscalesRequest, WorkflowParams):
    pass


class BuildAndPredictMosaicRecipeParams(BuildAndPredictMosaicRecipeRequest, WorkflowParams):
    pass


# The parameters of each workflow, by flow name (deployment forms are made from them).
PARAMS: dict[str, type[WorkflowParams]] = {
    "build-gti-mosaic": BuildGtiMosaicParams,
    "build-mosaic": BuildMosaicParams,
    "build-zarr-multiscales": BuildZarrMultiscalesParams,
    "predict-mosaic": PredictMosaicParams,
    "vectorize-mosaic": VectorizeMosaicParams,
    "build-and-predict-mosaic-recipe": BuildAndPredictMosaicRecipeParams,
}

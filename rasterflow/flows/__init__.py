"""Prefect flows, one module per workflow; each composes tasks and nothing else.

Imported lazily: a call imports its own flow's module, not every workflow's
(the recipe and predict flows pull in model code, vectorize its geometry stack).
Module ``<workflow>.py`` holds ``<workflow>_flow``, named like the workflow with dashes,
and ``dry_run``, the flow's plan reported and not run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

_WORKFLOWS = ("build_mosaic", "build_gti_mosaic", "build_zarr_multiscales", "predict_mosaic",
              "vectorize_mosaic", "build_and_predict_mosaic_recipe")

__all__ = ["FLOWS", "dry_run", *(f"{w}_flow" for w in _WORKFLOWS)]


def _module(workflow: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{workflow}")


def dry_run(flow_name: str) -> Callable[[Any, int], Any]:
    """The flow's plan, reported and not run: what ``RasterflowClient(dry_run=True)`` calls."""
    return _module(flow_name.replace("-", "_")).dry_run


def __getattr__(name: str) -> Any:
    if name == "FLOWS":  # flow name -> flow, every workflow's
        return {w.replace("_", "-"): getattr(_module(w), f"{w}_flow") for w in _WORKFLOWS}
    if name.endswith("_flow") and (workflow := name.removesuffix("_flow")) in _WORKFLOWS:
        return getattr(_module(workflow), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

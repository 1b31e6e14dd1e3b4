"""Prefect flows, one module per workflow; each composes tasks and nothing else.

Imported lazily: a call imports its own flow's module, not every workflow's
(the recipe and predict flows pull in model code, vectorize its geometry stack).
Module ``<workflow>.py`` holds ``<workflow>_flow``, named like the workflow with dashes.
"""

from __future__ import annotations

import importlib
from typing import Any

_WORKFLOWS = ("build_mosaic", "build_gti_mosaic", "build_zarr_multiscales", "predict_mosaic",
              "vectorize_mosaic", "build_and_predict_mosaic_recipe")

__all__ = ["FLOWS", *(f"{w}_flow" for w in _WORKFLOWS)]


def _flow(workflow: str) -> Any:
    return getattr(importlib.import_module(f"{__name__}.{workflow}"), f"{workflow}_flow")


def __getattr__(name: str) -> Any:
    if name == "FLOWS":  # flow name -> flow, every workflow's
        return {w.replace("_", "-"): _flow(w) for w in _WORKFLOWS}
    if name.removesuffix("_flow") in _WORKFLOWS:
        return _flow(name.removesuffix("_flow"))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""A call's inputs checked before its flow run exists, and the plan that check made.

Every planner reads metadata only (the AOI, a tile index and the tiles'
headers, store metadata, a model and one probe pass) and writes nothing, so
the client can run it before it starts a flow run: a missing file, a band not
in the tiles or a wrong location field is then one error in the caller, not a
Failed run on the dashboard. A local run's plan task takes the plan its check
made (``planned``) instead of planning again, so there the check costs
nothing; a deployment run plans again on its worker (the caller's plan cannot
travel as a parameter), so there the check costs one plan in the caller.

build-mosaic's scenes come from a catalog search with retries, which is the
run's first task: its check reads the AOI only. The recipe checks its AOI and,
in a local run, its model (the run would fetch it anyway); a deployment run's
worker checks the model before it builds the mosaic.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..config import RasterflowConfig
from ..engine import uris
from ..engine.build_and_predict_mosaic_recipe.check import check_recipe_model
from ..engine.build_gti_mosaic.plan import plan_gti_mosaic
from ..engine.build_zarr_multiscales.plan import plan_multiscales
from ..engine.predict_mosaic.plan import input_stores, plan_predict_mosaic
from ..engine.provenance import stable_hash
from ..engine.request import Request
from ..engine.vectorize_mosaic.plan import plan_vectorize
from ..engine.vectors import read_aoi
from ..errors import InvalidParameterError

Plan = TypeVar("Plan")

PLANNERS: dict[str, Callable[..., Any]] = {
    "build-gti-mosaic": plan_gti_mosaic,
    "build-zarr-multiscales": plan_multiscales,
    "predict-mosaic": plan_predict_mosaic,
    "vectorize-mosaic": plan_vectorize,
}
# A plan is taken by the run that follows its check within seconds; one left by
# a call that never ran is dropped after this, so it cannot serve a later call.
KEEP_SECONDS = 300.0
_PLANS: dict[str, tuple[float, Any]] = {}
_LOCK = threading.Lock()


# Planners that group blocks into tasks: their plan also depends on the config's task_pixels and the
# runner's task slots (``engine.groups``), which the key then holds.
GROUPED = {"predict-mosaic", "vectorize-mosaic"}


def _key(workflow: str, request: Request, output_root: str, layout: tuple[int, ...]) -> str:
    return stable_hash([workflow, request.model_dump(mode="json"), output_root, list(layout)])


def check_inputs(workflow: str, request: Any, config: RasterflowConfig, local: bool) -> None:
    """Raise the error the run would raise at its plan step, here and now; keep the plan for a local run.

    For a deployment run, predict-mosaic checks its stores and that the model
    exists, not the model itself: the worker's device (a GPU the caller may
    not have) is the one to load it on.
    """
    options = config.storage_options_for
    uris.check_output_root(config.output_uri, options(config.output_uri))
    if workflow == "predict-mosaic" and not local:
        input_stores(request.store, request, options)
        _require_model(request.model_path, options)
        return
    if workflow in PLANNERS:
        # A local run's thread runner has one task slot; a Dask run's plan step plans again.
        layout = (config.task_pixels, 1) if workflow in GROUPED else ()
        plan = PLANNERS[workflow](request, config.output_uri, options, *layout)
        if local:
            now = time.monotonic()
            with _LOCK:
                for key in [k for k, (made, _) in _PLANS.items() if now - made > KEEP_SECONDS]:
                    del _PLANS[key]
                _PLANS[_key(workflow, request, config.output_uri, layout)] = (now, plan)
        return
    read_aoi(request.aoi, options(request.aoi))
    if workflow == "build-and-predict-mosaic-recipe" and local:
        check_recipe_model(request.model_recipe, request.model_path, options)


def _require_model(model_path: str, options: uris.OptionsFor) -> None:
    try:
        found = uris.exists(model_path, options(model_path))
    except Exception as exc:  # noqa: BLE001 - any failure to reach it is the same answer
        raise InvalidParameterError("model_path", model_path,
                                    f"cannot be reached ({type(exc).__name__}: {exc})",
                                    "a model file this process can read") from None
    if not found:
        raise InvalidParameterError("model_path", model_path, "no such file or object",
                                    "a .pt2 (torch.export) or TorchScript file")


def planned(workflow: str, request: Request, output_root: str, make: Callable[[], Plan],
            layout: tuple[int, ...] = ()) -> Plan:
    """The plan the client's check made for this very call (same request, root and layout), or a new one."""
    with _LOCK:
        kept = _PLANS.pop(_key(workflow, request, output_root, layout), None)
    if kept is not None and time.monotonic() - kept[0] <= KEEP_SECONDS:
        return kept[1]
    return make()

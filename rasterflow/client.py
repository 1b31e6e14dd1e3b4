"""RasterflowClient: validate parameters, then run one Prefect flow per call.

The client does no raster work itself. Each method checks its parameters (so
a wrong call fails here, before a flow run exists), then runs the workflow's
flow, and returns what the flow returns: the URI of an index GeoParquet.
With ``execution: local`` (the default) the flow runs in this process with the
configured task runner; with ``execution: deployment`` it runs on the work pool
of the call's ``runtime`` size, through the ``<flow>/<size>`` deployment that
``rasterflow deploy`` registers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

from .config import RasterflowConfig, load_config, using_config
from .engine.predict_mosaic.request import DEFAULT_BLOCK_MULTIPLIER
from .engine.request import DEFAULT_CRS_EPSG, DEFAULT_SHARD_SIZE_BYTES, DEFAULT_XY_CHUNKSIZE
from .engine.vectorize_mosaic.request import DEFAULT_VECTOR_CRS
from .enums import (
    DatasetEnum,
    InferenceActorEnum,
    MergeModeEnum,
    ModelRecipes,
    ResamplingMethod,
    RuntimeEnum,
    VectorizeMethodEnum,
)
from .errors import ConfigError, InvalidParameterError, RasterflowError
from .params import (
    BuildAndPredictMosaicRecipeParams,
    BuildGtiMosaicParams,
    BuildMosaicParams,
    BuildZarrMultiscalesParams,
    PredictMosaicParams,
    VectorizeMosaicParams,
    WorkflowParams,
)

# Offline by default: no usage telemetry from the embedded server or the client.
_QUIET_PREFECT = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def _arguments(values: dict[str, Any]) -> dict[str, Any]:
    """A method's own ``locals()`` as the parameters of its workflow (not ``self``, not ``wait``)."""
    return {k: v for k, v in values.items() if k not in ("self", "wait")}


@contextmanager
def _environment(envs: dict[str, str] | None) -> Iterator[None]:
    """Overlay ``envs`` (GDAL/AWS options) on the process for one call.

    The reading tasks of a local run are threads of this process, and GDAL and
    botocore read these variables from the environment. They are never flow
    parameters, so they never reach the Prefect database, logs or provenance.
    """
    saved = {k: os.environ.get(k) for k in envs or {}}
    os.environ.update(envs or {})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class RasterflowClient:
    """Entry point of the RasterFlow workflows.

    ``config``: a ``RasterflowConfig``, a path to a rasterflow.yaml, or None to
    use ``RASTERFLOW_CONFIG_FILE`` / ``~/.config/rasterflow.yaml`` / defaults.
    """

    def __init__(self, config: RasterflowConfig | str | Path | None = None):
        for key, value in _QUIET_PREFECT.items():
            os.environ.setdefault(key, value)
        if isinstance(config, RasterflowConfig):
            self.config = config
        else:
            self.config = load_config(config)

    def build_gti_mosaic(
        self,
        gti: str,
        aoi: str,
        bands: list[str],
        location_field: str,
        crs_epsg: int = DEFAULT_CRS_EPSG,
        time_column: str | None = None,
        skip_xy_coords: bool = False,
        xy_chunksize: int = DEFAULT_XY_CHUNKSIZE,
        shard_size_bytes: int = DEFAULT_SHARD_SIZE_BYTES,
        query: str | None = None,
        requester_pays: bool = False,
        envs: dict[str, str] | None = None,
        sort_field: str | None = None,
        resampling: ResamplingMethod = ResamplingMethod.NEAREST,
        resolution: float | None = None,
        nodata: float | None = None,
        runtime: RuntimeEnum = RuntimeEnum.SMALL,
        wait: bool = True,
    ) -> str:
        """Mosaic the tiles of a GTI index over each AOI geometry into Zarr v3.

        Returns the URI of a GeoParquet index with one row per AOI geometry,
        whose ``location`` is the store. See docs/workflows.md for every
        parameter; tiles overlapping an AOI are warped with GDAL onto a grid
        snapped to ``resolution`` in ``crs_epsg``, later (or higher
        ``sort_field``) tiles on top.
        """
        params = BuildGtiMosaicParams.parse(**_arguments(locals()))
        from .flows.build_gti_mosaic import build_gti_mosaic_flow

        return self._run_index(build_gti_mosaic_flow, params, wait)

    def build_mosaic(
        self,
        datasets: list[DatasetEnum],
        aoi: str,
        start: datetime | date | str,
        end: datetime | date | str,
        crs_epsg: int = DEFAULT_CRS_EPSG,
        xy_chunksize: int = DEFAULT_XY_CHUNKSIZE,
        shard_size_bytes: int = DEFAULT_SHARD_SIZE_BYTES,
        envs: dict[str, str] | None = None,
        resolution: float | None = None,
        skip_xy_coords: bool = False,
        runtime: RuntimeEnum = RuntimeEnum.SMALL,
        wait: bool = True,
    ) -> str:
        """Composite named datasets (Sentinel-2 medians, NAIP) from their STAC catalogs into Zarr v3.

        One store per AOI geometry, one time slice per calendar year in
        [``start``, ``end``] (a planting or harvest season within each year for
        ``S2_MED_PLANTING`` / ``S2_MED_HARVEST``, chosen from the AOI's
        latitude), bands ``<dataset>:<band>`` of every dataset on one grid
        (``resolution`` in CRS units; default the finest native one). Catalogs
        can be replaced per dataset in the config (``datasets``). Returns the
        URI of a GeoParquet index like build_gti_mosaic's. See
        docs/workflows.md for the datasets, the season rule and the memory cap.
        """
        params = BuildMosaicParams.parse(**_arguments(locals()))
        from .flows.build_mosaic import build_mosaic_flow

        return self._run_index(build_mosaic_flow, params, wait)

    def vectorize_mosaic(
        self,
        store: str,
        features: list[str],
        threshold: float,
        vectorize_method: VectorizeMethodEnum = VectorizeMethodEnum.SEMANTIC_SEGMENTATION_RASTERIO,
        vectorize_config: dict | None = None,
        xy_block_multiplier: int = DEFAULT_BLOCK_MULTIPLIER,
        vector_crs: str | None = DEFAULT_VECTOR_CRS,
        runtime: RuntimeEnum = RuntimeEnum.SMALL,
        envs: dict[str, str] | None = None,
        wait: bool = True,
    ) -> str | None:
        """Threshold store bands into polygons, exactly as one whole-raster polygonize.

        ``store`` is a store URI or an index GeoParquet (every row is
        vectorized). Each feature (band) is foreground where value >=
        ``threshold`` and never where nodata; connected foreground becomes one
        polygon, whatever block borders it crosses. Returns the URI of one
        GeoParquet (``geometry`` in ``vector_crs``, ``label``, ``score_mean``
        when stats are on, ``time`` when a store has several time slices), or
        None when no polygon passes. ``vectorize_config`` keys: ``stats``,
        ``connectivity`` (4 or 8), ``min_area``, ``simplify_tolerance``; see
        docs/workflows.md.
        """
        params = VectorizeMosaicParams.parse(**_arguments(locals()))
        from .flows.vectorize_mosaic import vectorize_mosaic_flow

        return self._run(vectorize_mosaic_flow, params, wait)

    def build_zarr_multiscales(
        self,
        store: str,
        levels: int | None = None,
        resampling: ResamplingMethod | dict[str, ResamplingMethod] | None = None,
        runtime: RuntimeEnum = RuntimeEnum.SMALL,
        envs: dict[str, str] | None = None,
        wait: bool = True,
    ) -> str:
        """Add overview levels and band statistics to a store, in a new store.

        ``store`` is a Zarr store (a rasterflow store or any georeferenced Zarr
        rioxarray reads) or an index GeoParquet (one multiscales store per row).
        The input is never modified. Each new store holds level 0 (the input's
        pixels) and levels of half the resolution of the one before, down to
        one chunk or to ``levels`` levels in all (level 0 included), in the Zarr
        multiscales layout; every level also opens alone with xarray +
        rioxarray. ``resampling``: one method or a mapping band -> method
        (average, near, mode); by default average, and mode for integer bands
        marked categorical. Returns the URI of a GeoParquet index with one row
        per multiscales store. See docs/workflows.md.
        """
        params = BuildZarrMultiscalesParams.parse(**_arguments(locals()))
        from .flows.build_zarr_multiscales import build_zarr_multiscales_flow

        return self._run_index(build_zarr_multiscales_flow, params, wait)

    def predict_mosaic(
        self,
        store: str,
        model_path: str,
        patch_size: int,
        clip_size: int,
        device: str,
        features: list[str],
        labels: list[str],
        actor: InferenceActorEnum,
        max_batch_size: int,
        merge_mode: MergeModeEnum,
        select_labels: list[str] | None = None,
        xy_block_multiplier: int = DEFAULT_BLOCK_MULTIPLIER,
        output_xy_chunksize: int | None = None,
        runtime: RuntimeEnum = RuntimeEnum.SMALL,
        envs: dict[str, str] | None = None,
        wait: bool = True,
    ) -> str:
        """Run a PyTorch model over mosaic stores; one prediction store per input store.

        ``store`` is a store URI or an index GeoParquet (every row is
        predicted). ``model_path`` (local path or fsspec URL) is a
        ``torch.export`` ``.pt2`` or a TorchScript archive taking (B, C, H, W)
        float32 and returning (B, len(labels), H, W); pickles are refused
        unread. Patches of ``patch_size`` sit on one grid over the whole store
        and lose ``clip_size`` pixels per edge before ``merge_mode`` merges
        them, so results do not depend on ``xy_block_multiplier`` (input chunks
        per block side: the unit of a task). Output: float32, NaN nodata, bands
        = ``select_labels`` or ``labels``, the input's grid. Returns the URI of
        a GeoParquet index (``location`` = each prediction store). See
        docs/workflows.md.
        """
        params = PredictMosaicParams.parse(**_arguments(locals()))
        from .flows.predict_mosaic import predict_mosaic_flow

        return self._run_index(predict_mosaic_flow, params, wait)

    def build_and_predict_mosaic_recipe(
        self,
        aoi: str,
        start: datetime | date | str,
        end: datetime | date | str,
        model_recipe: ModelRecipes,
        crs_epsg: int | None = None,
        runtime: RuntimeEnum = RuntimeEnum.SMALL,
        envs: dict[str, str] | None = None,
        wait: bool = True,
    ) -> str:
        """Build a recipe's mosaic over ``aoi`` for [``start``, ``end``] and run its model on it.

        A recipe (``ModelRecipes``) bundles datasets, feature bands in model
        order, labels and inference settings (rasterflow/engine/build_and_predict_mosaic_recipe/recipes.py,
        docs/workflows.md). ``crs_epsg=None`` keeps the datasets' native CRS:
        the UTM zone of the AOI's centroid. The model's weights come from the
        recipe's public URI unless the config's ``recipe_models`` names another
        (a mirror, a local file); they are checked to be reachable before
        anything runs. Returns the URI of an index GeoParquet whose
        ``location`` column holds the prediction stores.
        """
        from .engine.build_and_predict_mosaic_recipe.recipes import recipe_spec

        try:
            recipe = ModelRecipes(model_recipe)
        except ValueError:
            raise InvalidParameterError("model_recipe", model_recipe, "is not a model recipe",
                                        ", ".join(r.value for r in ModelRecipes)) from None
        model_path = self.config.recipe_models.get(recipe) or recipe_spec(recipe).model_uri
        params = BuildAndPredictMosaicRecipeParams.parse(
            aoi=aoi, start=start, end=end, model_recipe=recipe, model_path=model_path, crs_epsg=crs_epsg,
            runtime=runtime, envs=envs,
        )
        self._check_recipe_model(recipe, model_path)
        from .flows.build_and_predict_mosaic_recipe import build_and_predict_mosaic_recipe_flow

        return self._run_index(build_and_predict_mosaic_recipe_flow, params, wait)

    def _check_recipe_model(self, recipe: ModelRecipes, model_path: str) -> None:
        """Fail before any work when the recipe's weights cannot be fetched, saying how to fix it."""
        from .engine import uris
        from .engine.build_and_predict_mosaic_recipe.recipes import recipe_spec

        try:
            found = uris.exists(model_path, self.config.storage_options_for(model_path))
            reason = "no such file"
        except Exception as exc:  # noqa: BLE001 - any failure to reach it is the same answer
            found, reason = False, f"{type(exc).__name__}: {exc}"
        if not found:
            raise InvalidParameterError(
                "model_recipe", recipe.value, f"cannot fetch its model from {model_path!r} ({reason})",
                f"a reachable model: point the recipe at a mirror or a local copy in rasterflow.yaml with "
                f"`recipe_models: {{{recipe.value}: <path or URL>}}`; offline, the bundled stand-in with the "
                f"same contract is {recipe_spec(recipe).standin}",
            )

    # ------------------------------------------------ seeing and exporting results

    def map_url(self, uri: str | list[str]) -> str:
        """A web map of ``uri`` (a store, a multiscales store, an index or polygons; or several URIs
        drawn together), served by a local viewer on 127.0.0.1 that keeps running in the background.

        The page draws raster layers from their pyramid levels with colour limits from the stored
        statistics (band or RGB choice, time slider, opacity, legend) and polygons on top. A URI
        that cannot be drawn fails here. ``rasterflow server stop`` stops the viewer.
        """
        from . import services
        from .engine.view import map_link
        from .engine.view.layers import layers_of

        listed = [uri] if isinstance(uri, str) else list(uri)
        for each in listed:
            layers_of(each, self.config.storage_options_for(each))
        state = services.start(services.VIEWER, self.config.view_port)
        return map_link(listed, state["url"])

    def export(self, uri: str, format: str = "cog", output: str | None = None) -> list[str]:
        """Write ``uri`` in a format GDAL, QGIS and every GIS open; returns the files written.

        ``format``: ``cog`` (one Cloud Optimized GeoTIFF per store and time slice, with
        overviews, nodata and band names) or ``zarr-v2`` (an unsharded Zarr v2 copy, which GDAL
        3.4-3.12 reads) for stores, multiscales stores and their indexes; ``gpkg`` or ``fgb`` for
        the polygons of vectorize_mosaic. ``output``: a folder (default: beside ``uri``). Sharded
        Zarr v3 needs GDAL >= 3.13; see docs/workflows.md, "Open the outputs in...".
        """
        from .engine.export import export

        return export(uri, format, output, self.config.storage_options_for)

    def _run_index(self, flow, params: WorkflowParams, wait: bool = True) -> str:
        """``_run`` of a flow that always returns a URI (a flow run id when not waiting)."""
        uri = self._run(flow, params, wait)
        assert uri is not None
        return uri

    def _run(self, flow, params: WorkflowParams, wait: bool = True) -> str | None:
        if self.config.execution == "deployment":
            return self._run_deployment(flow, params, wait)
        if not wait:
            raise InvalidParameterError(
                "wait", wait, "needs `execution: deployment` in the config: a local run runs in this process",
                "True, or execution: deployment",
            )
        from .engine.processes import importing_main
        from .flows.runtime import changed_settings, make_task_runner, run_settings

        if importing_main():  # a worker process importing an unguarded script: never run a flow there
            raise ConfigError(
                'rasterflow was called while a worker process imported your script: put the calls under '
                '`if __name__ == "__main__":`, or set process_pool: false in rasterflow.yaml'
            )
        _local_inputs_exist(params)
        runnable = flow.with_options(task_runner=make_task_runner(self.config))
        settings = run_settings(self.config) | _background_server()
        # No runtime tag: tags make every task run look up tag concurrency limits,
        # an API call per task that the embedded SQLite server pays for in stalls.
        with (using_config(self.config), _environment(params.envs), changed_settings(settings)):
            return runnable(**params.flow_parameters())

    def _run_deployment(self, flow, params: WorkflowParams, wait: bool) -> str | None:
        """Run ``<flow>/<runtime>`` on its work pool; ``envs`` become the run's ``env`` job variable.

        The pool, and so the infrastructure, follows from the runtime size (see
        rasterflow/deploy.py). The flow's return value is read from its
        persisted result, so the caller needs read access to the workers'
        result storage (PREFECT_DEFAULT_RESULT_STORAGE_BLOCK, or a shared
        PREFECT_HOME on one machine).
        """
        from prefect.client.schemas.objects import FlowRun
        from prefect.deployments import run_deployment
        from prefect.exceptions import MissingResult, ObjectNotFound

        from .deploy import api_url, deployment_name

        name = deployment_name(flow.name, params.runtime)
        job_variables = {"env": dict(params.envs)} if params.envs else None
        try:
            flow_run = run_deployment(
                name, parameters=params.flow_parameters(), job_variables=job_variables,
                timeout=None if wait else 0, as_subflow=False,
            )
        except ObjectNotFound:
            raise RasterflowError(
                f"no deployment {name!r} on the Prefect API ({api_url()}): run `rasterflow deploy` "
                "against it first, or use `execution: local`"
            ) from None
        assert isinstance(flow_run, FlowRun)  # called from sync code: the sync implementation ran
        if not wait:
            return str(flow_run.id)
        state = flow_run.state
        where = f"flow run {flow_run.name!r} ({flow_run.id}) of {name}, {_run_url(flow_run.id)}"
        if state is None or not state.is_completed():
            ended = state.type.value if state is not None else "UNKNOWN"
            message = state.message if state is not None else "no state"
            raise RasterflowError(f"{where} ended {ended}: {message}")
        try:
            return state.result()
        except MissingResult as exc:
            raise RasterflowError(
                f"{where} completed but its result is not readable here ({exc}); point "
                "PREFECT_DEFAULT_RESULT_STORAGE_BLOCK at storage both workers and this process can read"
            ) from None


# Inputs a run reads (a deployment's run reads them on its worker, where this process cannot look).
_INPUTS = ("gti", "aoi", "store", "model_path")


def _local_inputs_exist(params: WorkflowParams) -> None:
    """A local input that is not there fails here, before a flow run exists: the flow would fail on it in
    its first task, with a run in the UI and its traceback for a typo in a path."""
    from .engine import uris

    values = params.flow_parameters()
    for name in _INPUTS:
        given = values.get(name)
        for uri in given if isinstance(given, list) else [given]:
            local = isinstance(uri, str) and uris.is_local(uri) and not uri.startswith("/vsi")  # GDAL's own
            if local and not os.path.exists(uris.local_path(uri)):
                raise InvalidParameterError(name, uri, "no such file or object",
                                            f"an existing path (relative ones resolve against {os.getcwd()})")


def _background_server() -> dict[Any, Any]:
    """Run against ``rasterflow server start``'s server when it is up and no API URL is set:
    the embedded server's start-up (~8 s a process) is then paid once."""
    from prefect.settings import PREFECT_API_URL

    from .services import background_api_url

    if PREFECT_API_URL.value():
        return {}
    api = background_api_url()
    return {PREFECT_API_URL: api} if api else {}


def _run_url(flow_run_id) -> str:
    from prefect.settings import PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    return f"{ui}/runs/flow-run/{flow_run_id}" if ui else f"flow run id {flow_run_id}"

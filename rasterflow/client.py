"""RasterflowClient: validate parameters, then run one Prefect flow per call.

The client does no raster work itself. Each method checks its parameters (so
a wrong call fails here, before a flow run exists), then runs the workflow's
flow, and returns what the flow returns: the URI of an index GeoParquet (of
the multiscales store, given one store). With ``execution: local`` (the
default) the flow runs in this process with the configured task runner; with
``execution: deployment`` it runs on the work pool of the call's ``runtime``
size, through the ``<flow>/<size>`` deployment that ``rasterflow deploy``
registers. With ``dry_run=True`` it plans instead, as the flow would, and
returns the plan's report.

Both generations of RasterFlow's names work: the first (build_mosaic,
crs_epsg, ``store=``, InferenceActorEnum) are the methods' own; the 2026 ones
(build_mosaics, build_gti_mosaics, predict_mosaic_recipe, target_crs,
``mosaics=``, MosaicToMosaicActorEnum, run_mosaics_change) are aliases at the
end of the class and in the request models, running the same flows.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import RasterflowConfig, load_config, using_config
from .engine.predict_mosaic.request import DEFAULT_BLOCK_MULTIPLIER
from .engine.request import (
    DEFAULT_SHARD_SIZE_BYTES,
    DEFAULT_WARP_ERROR_THRESHOLD,
    DEFAULT_XY_CHUNKSIZE,
    Request,
)
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

if TYPE_CHECKING:
    from .engine.plan import PlanReport

CHANGE_DETECTION = InferenceActorEnum.SEMANTIC_SEGMENTATION_CHANGE_DETECTION_PYTORCH
# Offline by default: no usage telemetry from the embedded server or the client.
_QUIET_PREFECT = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def _arguments(values: dict[str, Any]) -> dict[str, Any]:
    """A method's own ``locals()`` as the parameters of its workflow (not ``self``, not ``wait``)."""
    return {k: v for k, v in values.items() if k not in ("self", "wait")}


def _renamed(model: type[Request]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Let a method take its request's newer keyword names (``RENAMED``: ``mosaics=`` for ``store``).

    The keyword maps to the parameter before Python binds the call, so the
    signature stays the seed's (``store`` first and required) and either name
    works; giving both is an ``InvalidParameterError``.
    """

    def decorate(method: Callable[..., Any]) -> Callable[..., Any]:
        positions = list(inspect.signature(method).parameters)  # self first

        @functools.wraps(method)
        def call(self, *args: Any, **kwargs: Any) -> Any:
            for new, old in model.RENAMED.items():
                if new in kwargs:
                    if old in kwargs or len(args) >= positions.index(old):
                        raise model.given_twice(new, kwargs[new])
                    kwargs[old] = kwargs.pop(new)
            return method(self, *args, **kwargs)

        return call

    return decorate


def _alias(method: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``name``, RasterFlow's 2026 name for ``method``: the same call, the same flow.

    A thin forwarder (looked up on the instance, so overriding the method
    overrides its alias too) with the method's signature for IDEs and help().
    """
    primary = method.__name__

    @functools.wraps(method)
    def alias(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, primary)(*args, **kwargs)

    alias.__name__, alias.__qualname__ = name, f"RasterflowClient.{name}"
    alias.__doc__ = f"RasterFlow's 2026 name for ``{primary}`` (the same flow).\n\n{method.__doc__}"
    return alias


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

    ``dry_run``: every method validates its parameters and plans as its flow
    would (reading the inputs' metadata, never writing: no store, no index,
    no flow run), and returns a ``PlanReport`` instead of a URI: the stores,
    their grid, bands and time slices, the tasks, the bytes it would read and
    write, its inputs and an estimated duration (``print()`` shows it as a
    table; docs/workflows.md, "Dry runs and the cache", gives the rates).

    ``cache``: False recomputes every task of every call (Prefect's
    ``refresh_cache``: no task is served from the cache, and each writes its
    result anew), still writing complete, committed outputs. The default,
    True, reuses what an identical call already computed.
    """

    def __init__(self, config: RasterflowConfig | str | Path | None = None, *, dry_run: bool = False,
                 cache: bool = True):
        for key, value in _QUIET_PREFECT.items():
            os.environ.setdefault(key, value)
        if isinstance(config, RasterflowConfig):
            self.config = config
        else:
            self.config = load_config(config)
        self.dry_run = dry_run
        self.cache = cache

    def build_gti_mosaic(
        self,
        gti: str,
        aoi: str,
        bands: list[str],
        location_field: str,
        crs_epsg: int | None = None,
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
        warp_error_threshold: float = DEFAULT_WARP_ERROR_THRESHOLD,
        target_crs: int | str | None = None,
        runtime: RuntimeEnum = RuntimeEnum.SMALL,
        wait: bool = True,
    ) -> str:
        """Mosaic the tiles of a GTI index over each AOI geometry into Zarr v3.

        Returns the URI of a GeoParquet index with one row per AOI geometry,
        whose ``location`` is the store. See docs/workflows.md for every
        parameter; tiles overlapping an AOI are warped with GDAL onto a grid
        snapped to ``resolution`` in ``target_crs`` (any CRS pyproj reads) or
        ``crs_epsg`` (one of them; neither: EPSG:3857), later (or higher
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
        crs_epsg: int | None = None,
        xy_chunksize: int = DEFAULT_XY_CHUNKSIZE,
        shard_size_bytes: int = DEFAULT_SHARD_SIZE_BYTES,
        envs: dict[str, str] | None = None,
        resolution: float | None = None,
        skip_xy_coords: bool = False,
        warp_error_threshold: float = DEFAULT_WARP_ERROR_THRESHOLD,
        target_crs: int | str | None = None,
        runtime: RuntimeEnum = RuntimeEnum.SMALL,
        wait: bool = True,
    ) -> str:
        """Composite named datasets (Sentinel-2 medians, NAIP) from their STAC catalogs into Zarr v3.

        One store per AOI geometry, one time slice per calendar year in
        [``start``, ``end``] (a planting or harvest season within each year for
        ``S2_MED_PLANTING`` / ``S2_MED_HARVEST``, chosen from the AOI's
        latitude), bands ``<dataset>:<band>`` of every dataset on one grid in
        ``target_crs`` or ``crs_epsg`` (neither: EPSG:3857; ``resolution`` in
        CRS units, default the finest native one). Catalogs
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
        marked categorical. Returns the URI of the multiscales store when
        ``store`` is a store (as RasterFlow's reference does: ``zarr.open_group``
        opens it), or of a GeoParquet index with one row per multiscales store
        when ``store`` is an index. See docs/workflows.md.
        """
        params = BuildZarrMultiscalesParams.parse(**_arguments(locals()))
        from .flows.build_zarr_multiscales import build_zarr_multiscales_flow

        return self._run_index(build_zarr_multiscales_flow, params, wait)

    @_renamed(PredictMosaicParams)
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

        ``store`` (RasterFlow's 2026 keyword: ``mosaics``) is a store URI or an
        index GeoParquet (every row is predicted). ``model_path`` (local path or fsspec URL) is a
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
        target_crs: int | str | None = None,
        runtime: RuntimeEnum = RuntimeEnum.SMALL,
        envs: dict[str, str] | None = None,
        wait: bool = True,
    ) -> str:
        """Build a recipe's mosaic over ``aoi`` for [``start``, ``end``] and run its model on it.

        A recipe (``ModelRecipes``) bundles datasets, feature bands in model
        order, labels and inference settings (rasterflow/engine/build_and_predict_mosaic_recipe/recipes.py,
        docs/workflows.md). The output CRS is ``target_crs`` (any CRS pyproj
        reads) or ``crs_epsg``; neither keeps the datasets' native CRS: the UTM
        zone of the AOI's centroid. The model's weights come from the
        recipe's public URI unless the config's ``recipe_models`` names another
        (a mirror, a local file); they are checked to be reachable before
        anything runs. A recipe whose weights ship in a package (``UKIS_CSMASK``:
        ``pip install 'rasterflow[csmask]'``) writes its model file from the
        installed package under ``<output_uri>/models/`` (once), offline.
        Returns the URI of an index GeoParquet whose
        ``location`` column holds the prediction stores.
        """
        from .engine.build_and_predict_mosaic_recipe.recipes import recipe_spec, write_packaged_model

        try:
            recipe = ModelRecipes(model_recipe)
        except ValueError:
            raise InvalidParameterError("model_recipe", model_recipe, "is not a model recipe",
                                        ", ".join(r.value for r in ModelRecipes)) from None
        spec = recipe_spec(recipe)
        mirror = self.config.recipe_models.get(recipe)
        # Packaged weights (ukis-csmask): checked installed here, written under the output root below.
        model_path = self.config.recipe_model(recipe)
        params = BuildAndPredictMosaicRecipeParams.parse(
            aoi=aoi, start=start, end=end, model_recipe=recipe, model_path=model_path, crs_epsg=crs_epsg,
            target_crs=target_crs, runtime=runtime, envs=envs,
        )
        if mirror or not spec.packaged:
            self._check_recipe_model(recipe, model_path)
        else:
            write_packaged_model(spec, model_path, self.config.storage_options_for(model_path))
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
            spec = recipe_spec(recipe)
            offline = (f"the bundled stand-in with the same contract is {spec.standin}" if spec.standin else
                       f"drop the entry to use the weights of the installed {spec.packaged.distribution}"
                       if spec.packaged else "")
            raise InvalidParameterError(
                "model_recipe", recipe.value, f"cannot fetch its model from {model_path!r} ({reason})",
                f"a reachable model: point the recipe at a mirror or a local copy in rasterflow.yaml with "
                f"`recipe_models: {{{recipe.value}: <path or URL>}}`; offline, {offline}",
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

    def _run(self, flow, params: WorkflowParams, wait: bool = True) -> Any:
        if self.dry_run:
            return self._plan(flow, params)
        if self.config.execution == "deployment":
            self._refuse_relative_output()
            self._check_inputs(flow, params, local=False)
            return self._run_deployment(flow, params, wait)
        if not wait:
            raise InvalidParameterError(
                "wait", wait, "needs `execution: deployment` in the config: a local run runs in this process",
                "True, or execution: deployment",
            )
        from prefect.settings import PREFECT_TASKS_REFRESH_CACHE

        from .engine.processes import importing_main
        from .flows.runtime import changed_settings, make_task_runner, run_settings

        if importing_main():  # a worker process importing an unguarded script: never run a flow there
            raise ConfigError(
                'rasterflow was called while a worker process imported your script: put the calls under '
                '`if __name__ == "__main__":`, or set process_pool: false in rasterflow.yaml'
            )
        _local_inputs_exist(params)
        self._check_inputs(flow, params, local=True)
        runnable = flow.with_options(task_runner=make_task_runner(self.config))
        settings = run_settings(self.config) | _background_server()
        # No runtime tag: tags make every task run look up tag concurrency limits,
        # an API call per task that the embedded SQLite server pays for in stalls.
        if not self.cache:  # cache=False: every task recomputes and refreshes its cached result
            settings[PREFECT_TASKS_REFRESH_CACHE] = True
        with (using_config(self.config), _environment(params.envs), changed_settings(settings)):
            return runnable(**params.flow_parameters())

    def _plan(self, flow, params: WorkflowParams) -> PlanReport:
        """What ``flow`` would do with ``params``, planned by its own planning steps: no flow run, no write.

        The estimate assumes the workers the run would get: this machine's
        (config ``max_workers``) locally, the runtime size's CPUs on a work pool.
        """
        from .flows import dry_run

        deployed = self.config.execution == "deployment"
        workers = int(params.runtime.spec.cpu) if deployed else self.config.max_workers or os.cpu_count() or 1
        with using_config(self.config), _environment(params.envs):
            return dry_run(flow.name)(params, workers)

    def _refuse_relative_output(self) -> None:
        """A relative output_uri set here means nothing on a worker: one error, before a run exists."""
        relative = self.config.relative_output_uri
        if relative is not None and "output_uri" in self.config.model_fields_set:
            raise InvalidParameterError(
                "output_uri", relative, "is relative: a deployment run has no folder of this process's to "
                "resolve it against (a worker's run folder is temporary)",
                "an absolute path or URI, or leave output_uri out to use the workers' own",
            )

    def _check_inputs(self, flow, params: WorkflowParams, local: bool) -> None:
        """Every mistake the inputs' metadata can show, raised here, before a flow run exists.

        Reads with the call's config and ``envs``, as the run's plan step would.
        A local run's plan step then takes the plan made here (tasks/checks.py).
        """
        if not self.config.check_inputs:
            return
        from .tasks.checks import check_inputs

        with using_config(self.config), _environment(params.envs):
            check_inputs(flow.name, params, self.config, local)

    def _run_deployment(self, flow, params: WorkflowParams, wait: bool) -> str | None:
        """Run ``<flow>/<runtime>`` on its work pool.

        The pool, and so the infrastructure, follows from the runtime size (see
        rasterflow/deploy.py). The run keys this config sets (``output_uri``
        above all) travel as the ``run_config`` parameter; ``envs`` travel as
        the ``env`` job variable, each value a reference to a Prefect Secret
        block that the worker resolves, so no credential is stored or shown in
        plain text. The flow's return value is read from its persisted result,
        so the caller needs read access to the workers' result storage
        (PREFECT_DEFAULT_RESULT_STORAGE_BLOCK, or a shared PREFECT_HOME on one
        machine).
        """
        import httpx
        from prefect.client.schemas.objects import FlowRun
        from prefect.deployments import run_deployment
        from prefect.exceptions import MissingResult, ObjectNotFound

        from .config import RUN_CONFIG
        from .deploy import api_url, deployment_name, env_job_variable, unreachable_api

        name = deployment_name(flow.name, params.runtime)
        parameters = params.flow_parameters()
        run_config = self.config.run_config().model_dump(mode="json", exclude_none=True)
        if run_config:
            parameters[RUN_CONFIG] = run_config
        try:
            env = env_job_variable(params.envs) if params.envs else {}
            if not self.cache:  # cache=False: the run's tasks refresh their cached results
                env["PREFECT_TASKS_REFRESH_CACHE"] = "true"
            job_variables = {"env": env} if env else None
            flow_run = run_deployment(
                name, parameters=parameters, job_variables=job_variables,
                timeout=None if wait else 0, as_subflow=False,
            )
        except ObjectNotFound:
            raise RasterflowError(
                f"no deployment {name!r} on the Prefect API ({api_url()}): run `rasterflow deploy` "
                "against it first, or use `execution: local`"
            ) from None
        except httpx.TransportError as exc:  # no server there, or it went away
            raise unreachable_api(exc) from None
        assert isinstance(flow_run, FlowRun)  # called from sync code: the sync implementation ran
        if not wait:
            return str(flow_run.id)
        state = flow_run.state
        where = f"flow run {flow_run.name!r} ({flow_run.id}) of {name}, {_run_url(flow_run.id)}"
        if state is None or not state.is_completed():
            ended = state.type.value if state is not None else "UNKNOWN"
            message = " ".join((state.message or "no message").split()) if state is not None else "no state"
            raise RasterflowError(f"{where} ended {ended}: {message}")
        try:
            return state.result()
        except MissingResult as exc:
            raise RasterflowError(
                f"{where} completed but its result is not readable here ({exc}); point "
                "PREFECT_DEFAULT_RESULT_STORAGE_BLOCK at storage both workers and this process can read"
            ) from None


    # ------------------------------------------------------------ RasterFlow's 2026 names
    # The same flows under the names RasterFlow's API took in 2026 (docs/workflows.md, "Coming from
    # RasterFlow"): thin aliases, so both generations of reference code run unchanged. Keywords:
    # target_crs (for crs_epsg) is a parameter of the methods above, mosaics= (for store) is
    # predict_mosaic's; MosaicToMosaicActorEnum is InferenceActorEnum (rasterflow.enums).

    build_mosaics = _alias(build_mosaic, "build_mosaics")
    build_gti_mosaics = _alias(build_gti_mosaic, "build_gti_mosaics")
    predict_mosaic_recipe = _alias(build_and_predict_mosaic_recipe, "predict_mosaic_recipe")

    def run_mosaics_change(
        self,
        mosaics: str,
        model_path: str,
        patch_size: int,
        clip_size: int,
        device: str,
        features: list[str],
        labels: list[str],
        max_batch_size: int,
        merge_mode: MergeModeEnum,
        select_labels: list[str] | None = None,
        xy_block_multiplier: int = DEFAULT_BLOCK_MULTIPLIER,
        output_xy_chunksize: int | None = None,
        runtime: RuntimeEnum = RuntimeEnum.SMALL,
        envs: dict[str, str] | None = None,
        wait: bool = True,
    ) -> str:
        """Change detection over mosaics with two time slices (RasterFlow's 2026 entry point).

        ``predict_mosaic`` with the change-detection actor
        (``SEMANTIC_SEGMENTATION_CHANGE_DETECTION_PYTORCH``): each store's two
        time slices, earlier first, are stacked on the channel axis (``features``
        names one slice's bands; the model takes twice as many channels), and
        the softmax over ``labels`` is written for the later date, with a
        ``time_delta`` coordinate (later minus earlier). Same flow
        (predict-mosaic), parameters, cache and answer as ``predict_mosaic``.
        """
        arguments = _arguments(locals())
        return self.predict_mosaic(arguments.pop("mosaics"), actor=CHANGE_DETECTION, wait=wait, **arguments)


def _run_url(flow_run_id) -> str:
    from prefect.settings import PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    return f"{ui}/runs/flow-run/{flow_run_id}" if ui else f"flow run id {flow_run_id}"


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
            if not isinstance(uri, str) or not uris.is_local(uri) or uri.startswith("/vsi"):  # GDAL's own
                continue
            if not os.path.exists(uris.local_path(uri)):
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

"""RasterflowClient: validate parameters, then run one Prefect flow per call.

The client does no raster work itself. Each method checks its parameters (so
a wrong call fails here, before a flow run exists), then runs the workflow's
flow in this process with the configured task runner, and returns what the
flow returns: the URI of an index GeoParquet.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .config import RasterflowConfig, load_config, using_config
from .enums import InferenceActorEnum, MergeModeEnum, ResamplingMethod, RuntimeEnum, VectorizeMethodEnum
from .errors import ConfigError
from .params import (
    BuildGtiMosaicParams, BuildZarrMultiscalesParams, PredictMosaicParams, VectorizeMosaicParams, WorkflowParams,
)

# Offline by default: no usage telemetry from the embedded server or the client.
_QUIET_PREFECT = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


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
        crs_epsg: int = 3857,
        time_column: str | None = None,
        skip_xy_coords: bool = False,
        xy_chunksize: int = 512,
        shard_size_bytes: int = 3_500_000_000,
        query: str | None = None,
        requester_pays: bool = False,
        envs: dict[str, str] | None = None,
        sort_field: str | None = None,
        resampling: ResamplingMethod = ResamplingMethod.NEAREST,
        resolution: float | None = None,
        nodata: float | None = None,
        runtime: RuntimeEnum = RuntimeEnum.SMALL,
    ) -> str:
        """Mosaic the tiles of a GTI index over each AOI geometry into Zarr v3.

        Returns the URI of a GeoParquet index with one row per AOI geometry,
        whose ``location`` is the store. See docs/workflows.md for every
        parameter; tiles overlapping an AOI are warped with GDAL onto a grid
        snapped to ``resolution`` in ``crs_epsg``, later (or higher
        ``sort_field``) tiles on top.
        """
        params = BuildGtiMosaicParams.parse(
            gti=gti, aoi=aoi, bands=list(bands), location_field=location_field, crs_epsg=crs_epsg,
            time_column=time_column, skip_xy_coords=skip_xy_coords, xy_chunksize=xy_chunksize,
            shard_size_bytes=shard_size_bytes, query=query, requester_pays=requester_pays, envs=envs,
            sort_field=sort_field, resampling=resampling, resolution=resolution, nodata=nodata,
            runtime=runtime,
        )
        from .flows.build_gti_mosaic import build_gti_mosaic_flow

        return self._run(build_gti_mosaic_flow, params)

    def vectorize_mosaic(
        self,
        store: str,
        features: list[str],
        threshold: float,
        vectorize_method: VectorizeMethodEnum = VectorizeMethodEnum.SEMANTIC_SEGMENTATION_RASTERIO,
        vectorize_config: dict | None = None,
        xy_block_multiplier: int = 4,
        vector_crs: str | None = "EPSG:4326",
        runtime: RuntimeEnum = RuntimeEnum.SMALL,
        envs: dict[str, str] | None = None,
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
        params = VectorizeMosaicParams.parse(
            store=store, features=features, threshold=threshold, vectorize_method=vectorize_method,
            vectorize_config=vectorize_config, xy_block_multiplier=xy_block_multiplier, vector_crs=vector_crs,
            runtime=runtime, envs=envs,
        )
        from .flows.vectorize_mosaic import vectorize_mosaic_flow

        return self._run(vectorize_mosaic_flow, params)

    def build_zarr_multiscales(
        self,
        store: str,
        levels: int | None = None,
        resampling: ResamplingMethod | dict[str, ResamplingMethod] | None = None,
        runtime: RuntimeEnum = RuntimeEnum.SMALL,
        envs: dict[str, str] | None = None,
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
        params = BuildZarrMultiscalesParams.parse(
            store=store, levels=levels, resampling=resampling, runtime=runtime, envs=envs,
        )
        from .flows.build_zarr_multiscales import build_zarr_multiscales_flow

        return self._run(build_zarr_multiscales_flow, params)

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
        xy_block_multiplier: int = 4,
        output_xy_chunksize: int | None = None,
        runtime: RuntimeEnum = RuntimeEnum.SMALL,
        envs: dict[str, str] | None = None,
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
        params = PredictMosaicParams.parse(
            store=store, model_path=model_path, patch_size=patch_size, clip_size=clip_size, device=device,
            features=features, labels=labels, actor=actor, max_batch_size=max_batch_size,
            merge_mode=merge_mode, select_labels=select_labels, xy_block_multiplier=xy_block_multiplier,
            output_xy_chunksize=output_xy_chunksize, runtime=runtime, envs=envs,
        )
        from .flows.predict_mosaic import predict_mosaic_flow

        return self._run(predict_mosaic_flow, params)

    def _run(self, flow, params: WorkflowParams) -> str | None:
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        from .engine.processes import importing_main
        from .flows.runtime import make_task_runner

        if importing_main():  # a worker process importing an unguarded script: never run a flow there
            raise ConfigError(
                'rasterflow was called while a worker process imported your script: put the calls under '
                '`if __name__ == "__main__":`, or set process_pool: false in rasterflow.yaml'
            )
        runnable = flow.with_options(task_runner=make_task_runner(self.config))
        # Heartbeats are for workers; in-process they only add a ~1 s shutdown wait.
        # No runtime tag: tags make every task run look up tag concurrency limits,
        # an API call per task that the embedded SQLite server pays for in stalls.
        with using_config(self.config), _environment(params.envs), temporary_settings(
            {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
        ):
            return runnable(**params.flow_parameters())

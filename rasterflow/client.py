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
from .enums import ResamplingMethod, RuntimeEnum
from .params import BuildGtiMosaicParams, WorkflowParams

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

    def _run(self, flow, params: WorkflowParams) -> str:
        from prefect import tags
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        from .flows.runtime import make_task_runner

        runnable = flow.with_options(task_runner=make_task_runner(self.config))
        # Heartbeats are for workers; in-process they only add a ~1 s shutdown wait.
        # The runtime size is not a parameter of the computation; a tag shows it in the UI.
        with using_config(self.config), _environment(params.envs), temporary_settings(
            {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
        ), tags(f"runtime:{params.runtime.value}"):
            return runnable(**params.flow_parameters())

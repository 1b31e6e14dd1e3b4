"""build-gti-mosaic: a GTI tile index and an AOI to sharded Zarr v3 mosaics.

plan-partitions -> create-store (one per AOI geometry) -> build-shard (one per
partition, cached) -> commit-store -> write-index. A store is committed only
after all its partitions succeeded; the index is written last.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from ..config import RunConfig, current_config
from ..engine.build_gti_mosaic.request import BuildGtiMosaicRequest
from ..engine.plan import PlanReport
from ..engine.request import (
    DEFAULT_SHARD_SIZE_BYTES,
    DEFAULT_WARP_ERROR_THRESHOLD,
    DEFAULT_XY_CHUNKSIZE,
)
from ..enums import ResamplingMethod
from ..tasks.build_gti_mosaic import build_shard_task, plan_partitions
from ..tasks.policy import io_task_options
from ..tasks.publish import publish_stores
from ..tasks.stores import write_index_task
from .runtime import announce_run, request_arguments, run_configuration, write_stores


@flow(name="build-gti-mosaic", validate_parameters=True, persist_result=True)
def build_gti_mosaic_flow(
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
    sort_field: str | None = None,
    resampling: ResamplingMethod = ResamplingMethod.NEAREST,
    resolution: float | None = None,
    nodata: float | None = None,
    warp_error_threshold: float = DEFAULT_WARP_ERROR_THRESHOLD,
    target_crs: int | str | None = None,
    run_config: RunConfig | None = None,
) -> str:
    """Build one mosaic store per AOI geometry; returns the index GeoParquet URI."""
    request = BuildGtiMosaicRequest.parse(**request_arguments(locals()))
    config = run_configuration(run_config)
    announce_run()
    plan = plan_partitions(request, config.output_uri)
    get_run_logger().info("%d store(s), %d partition(s) under %s", len(plan.stores), plan.n_jobs,
                          plan.output_dir)

    write_stores(plan, build_shard_task.with_options(**io_task_options(config)))
    index_uri = write_index_task(plan)
    publish_stores(
        "build-gti-mosaic", index_uri,
        f"# build-gti-mosaic\n\nIndex: `{index_uri}`\n\n{len(plan.stores)} store(s), "
        f"{plan.n_jobs} partition(s), bands {', '.join(plan.stores[0].spec.bands) if plan.stores else '-'}.",
    )
    return index_uri


def dry_run(request: BuildGtiMosaicRequest, workers: int) -> PlanReport:
    """The flow's plan, reported and not run (``RasterflowClient(dry_run=True)``): nothing is written."""
    return plan_partitions.fn(request, current_config().output_uri).report(workers)

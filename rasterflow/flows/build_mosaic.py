"""build-mosaic: named datasets (Sentinel-2 median composites, NAIP) from STAC catalogs to Zarr v3.

search-catalog -> plan-partitions -> create-store (one per AOI geometry) ->
build-shard (one per partition and year, cached; reads only the scenes touching
its partition) -> commit-store -> write-index. The same stores, index and
artifacts as build-gti-mosaic.
"""

from __future__ import annotations

from datetime import date

from prefect import flow, get_run_logger

from ..config import RunConfig, current_config
from ..engine.build_mosaic.request import BuildMosaicRequest
from ..engine.plan import PlanReport
from ..engine.request import (
    DEFAULT_SHARD_SIZE_BYTES,
    DEFAULT_WARP_ERROR_THRESHOLD,
    DEFAULT_XY_CHUNKSIZE,
)
from ..enums import DatasetEnum
from ..tasks.build_mosaic import build_shard_task, plan_partitions, search_catalog_task
from ..tasks.policy import io_task_options
from ..tasks.publish import publish_stores
from ..tasks.stores import write_index_task
from .runtime import announce_run, request_arguments, run_configuration, write_stores


@flow(name="build-mosaic", validate_parameters=True, persist_result=True)
def build_mosaic_flow(
    datasets: list[DatasetEnum],
    aoi: str,
    start: date,
    end: date,
    crs_epsg: int | None = None,
    xy_chunksize: int = DEFAULT_XY_CHUNKSIZE,
    shard_size_bytes: int = DEFAULT_SHARD_SIZE_BYTES,
    resolution: float | None = None,
    skip_xy_coords: bool = False,
    warp_error_threshold: float = DEFAULT_WARP_ERROR_THRESHOLD,
    target_crs: int | str | None = None,
    run_config: RunConfig | None = None,
) -> str:
    """Composite the datasets over each AOI geometry, one time slice per year; returns the index URI."""
    request = BuildMosaicRequest.parse(**request_arguments(locals()))
    config = run_configuration(run_config)
    announce_run()
    logger = get_run_logger()
    found = search_catalog_task.with_options(**io_task_options(config))(request)
    for prefix, by_year in found.scenes.items():
        logger.info("%s: %s scene(s) by year", prefix, {y: len(s) for y, s in by_year.items()})
    plan = plan_partitions(request, found, config.output_uri)
    logger.info("%d store(s), %d partition(s) under %s", len(plan.stores), plan.n_jobs, plan.output_dir)

    write_stores(plan, build_shard_task.with_options(**io_task_options(config)))
    index_uri = write_index_task(plan)
    scenes = "\n".join(
        f"- {prefix}: " + ", ".join(f"{y}: {len(s)}" for y, s in by_year.items())
        for prefix, by_year in found.scenes.items()
    )
    publish_stores(
        "build-mosaic", index_uri,
        f"# build-mosaic\n\nIndex: `{index_uri}`\n\n"
        f"{len(plan.stores)} store(s), {plan.n_jobs} partition(s).\n\n"
        f"Scenes per year:\n{scenes}\n",
    )
    return index_uri


def dry_run(request: BuildMosaicRequest, workers: int) -> PlanReport:
    """The flow's search and plan, reported and not run (``RasterflowClient(dry_run=True)``)."""
    return plan_partitions.fn(request, search_catalog_task.fn(request), current_config().output_uri).report(
        workers)

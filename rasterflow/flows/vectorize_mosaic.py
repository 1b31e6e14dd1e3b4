"""vectorize-mosaic: store bands thresholded into polygons, as one GeoParquet.

plan-partitions -> create-output -> polygonize (one per group of neighbouring
blocks and time slice, sized by the config's ``task_pixels``; cached; joins
the seams inside its group) -> merge-parquet (joins the seams between
groups). The result is written whole by merge-parquet, last; the groups'
parts stay under ``parts/`` so a re-run only repeats what is new.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from ..config import RunConfig, current_config
from ..engine.plan import PlanReport
from ..engine.vectorize_mosaic.group import PolygonizeSummary
from ..engine.vectorize_mosaic.merge import MergeSummary
from ..engine.vectorize_mosaic.plan import VectorizePlan
from ..engine.vectorize_mosaic.request import (
    DEFAULT_BLOCK_MULTIPLIER,
    DEFAULT_VECTOR_CRS,
    VectorizeMosaicRequest,
)
from ..enums import VectorizeMethodEnum
from ..tasks.policy import io_task_options
from ..tasks.publish import publish_polygons
from ..tasks.vectorize_mosaic import create_output_task, merge_parquet_task, plan_polygonize, polygonize_task
from .runtime import announce_run, request_arguments, run_configuration, task_slots, wait_reporting


@flow(name="vectorize-mosaic", validate_parameters=True, persist_result=True)
def vectorize_mosaic_flow(
    store: str,
    features: list[str],
    threshold: float,
    vectorize_method: VectorizeMethodEnum = VectorizeMethodEnum.SEMANTIC_SEGMENTATION_RASTERIO,
    vectorize_config: dict[str, Any] | None = None,
    xy_block_multiplier: int = DEFAULT_BLOCK_MULTIPLIER,
    vector_crs: str | None = DEFAULT_VECTOR_CRS,
    run_config: RunConfig | None = None,
) -> str | None:
    """Polygonize every store named by ``store``; the GeoParquet's URI, or None if no polygon."""
    request = VectorizeMosaicRequest.parse(**request_arguments(locals()))
    config = run_configuration(run_config)
    announce_run()
    plan = plan_polygonize(request, config.output_uri, task_slots(config))
    get_run_logger().info("%d store(s), %d block(s) in %d task(s) under %s", len(plan.stores),
                          sum(len(job.blocks) for job in plan.jobs), len(plan.jobs), plan.output_dir)

    generation = create_output_task(plan)
    options = io_task_options(config)
    block_task = polygonize_task.with_options(**options)
    submitted = [block_task.submit(job, plan.settings, generation) for job in plan.jobs]
    summaries = wait_reporting(submitted, "groups")
    parts = sorted(s.part for s in summaries if s.part)
    result = merge_parquet_task.with_options(**options)(plan, parts, generation)
    _publish(plan, summaries, result)
    return result.uri


def _publish(plan: VectorizePlan, summaries: list[PolygonizeSummary], result: MergeSummary) -> None:
    """Artifacts for people in the Prefect UI: what was found, where, from which stores."""
    finished = sum(s.finished for s in summaries)
    border = sum(s.border for s in summaries)
    where = f"`{result.uri}`" if result.uri else "nothing (no polygon passed the threshold and min_area)"
    stores = "".join(f"\n- `{s.uri}` ({s.grid.height} x {s.grid.width}, {len(s.times)} time slot(s))"
                     for s in plan.stores)
    summary = (
        f"# vectorize-mosaic\n\nResult: {where}\n\n{result.polygons} polygon(s) of "
        f"{', '.join(plan.settings.features)} at threshold {plan.settings.threshold}, "
        f"{plan.settings.connectivity}-connected; {sum(s.blocks for s in summaries)} block(s) in "
        f"{len(plan.jobs)} task(s), {finished} polygon(s) finished in their task, {border} piece(s) joined "
        f"across task edges.\n\nStores vectorized:{stores}"
    )
    publish_polygons("vectorize-mosaic", result.uri, list(plan.settings.features), summary)


def dry_run(request: VectorizeMosaicRequest, workers: int) -> PlanReport:
    """The flow's plan, reported and not run (``RasterflowClient(dry_run=True)``)."""
    return plan_polygonize.fn(request, current_config().output_uri).report(workers)

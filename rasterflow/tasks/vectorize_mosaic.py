"""Tasks of vectorize-mosaic: plan-partitions, create-output, polygonize, merge-parquet.

polygonize (one per group of blocks) and merge-parquet are cached across runs
(``policy.WorkKey``). Their keys are the group's key (which hashes the
parameters, the input stores' identities, the code and the group's extent)
or the request id, the output folder's generation and the code fingerprint:
an identical call, or a re-run after a crash, skips every group already
polygonized, and a deleted output folder gets a new generation and so no
stale hits.

A polygonize task runs its blocks on as many threads as its worker has cores
(GDAL's polygonize releases the GIL); with ``process_pool`` and the thread
task runner, blocks go to the engine's process pool instead.
"""

from __future__ import annotations

from prefect import task

from ..config import current_config
from ..engine.partitions import Window
from ..engine.processes import run_in_process
from ..engine.vectorize_mosaic.group import PolygonizeSummary, polygonize_group
from ..engine.vectorize_mosaic.merge import MergeSummary, merge_parts
from ..engine.vectorize_mosaic.plan import (
    PolygonizeJob,
    VectorizePlan,
    VectorizeSettings,
    create_output,
    plan_vectorize,
)
from ..engine.vectorize_mosaic.polygonize import polygonize_block
from ..engine.vectorize_mosaic.request import VectorizeMosaicRequest
from .checks import planned
from .policy import block_workers, cached, reporting


@task(name="plan-partitions", persist_result=False)
def plan_polygonize(request: VectorizeMosaicRequest, output_root: str, slots: int = 1) -> VectorizePlan:
    config = current_config()
    return planned("vectorize-mosaic", request, output_root,
                   lambda: plan_vectorize(request, output_root, config.storage_options_for,
                                          config.task_pixels, slots),
                   layout=(config.task_pixels, slots))


@task(name="create-output", persist_result=False)
def create_output_task(plan: VectorizePlan) -> str:
    return create_output(plan, current_config().storage_options_for(plan.output_dir))


@task(name="polygonize", task_run_name="polygonize-{job.name}", **cached())
@reporting
def polygonize_task(job: PolygonizeJob, settings: VectorizeSettings, generation: str) -> PolygonizeSummary:
    config = current_config()
    workers = block_workers(config)
    options = config.storage_options_for(job.store.uri)
    if config.process_pool and config.task_runner == "threads":
        def in_process(job: PolygonizeJob, window: Window, settings: VectorizeSettings, options):
            return run_in_process(polygonize_block, job, window, settings, options, workers=workers)

        return polygonize_group(job, settings, options, workers, run_block=in_process)
    return polygonize_group(job, settings, options, workers)


@task(name="merge-parquet", **cached())
@reporting
def merge_parquet_task(plan: VectorizePlan, parts: list[str], generation: str) -> MergeSummary:
    return merge_parts(plan, parts, current_config().storage_options_for(plan.result_uri))

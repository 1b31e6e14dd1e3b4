"""Tasks of vectorize-mosaic: plan-partitions, create-output, polygonize, merge-parquet.

polygonize and merge-parquet are cached across runs (``policy.WorkKey``).
Their keys are the block key (which hashes the parameters, the input stores'
identities and the code) or the request id, the output folder's generation
and the code fingerprint: an identical call, or a re-run after a crash, skips
every block already polygonized, and a deleted output folder gets a new
generation and so no stale hits.

polygonize holds the GIL (GDAL through rasterio, scipy), so with the thread
task runner it can run in the engine's process pool (config ``process_pool``):
the task's thread waits, the block uses a core of its own.
"""

from __future__ import annotations

from prefect import task

from ..config import current_config
from ..engine.processes import run_in_process
from ..engine.vectorize_mosaic.merge import MergeSummary, merge_parts
from ..engine.vectorize_mosaic.plan import (
    PolygonizeJob,
    VectorizePlan,
    VectorizeSettings,
    create_output,
    plan_vectorize,
)
from ..engine.vectorize_mosaic.polygonize import PolygonizeSummary, polygonize_block
from ..engine.vectorize_mosaic.request import VectorizeMosaicRequest
from .policy import cached, reporting


@task(name="plan-partitions", persist_result=False)
def plan_polygonize(request: VectorizeMosaicRequest, output_root: str) -> VectorizePlan:
    return plan_vectorize(request, output_root, current_config().storage_options_for)


@task(name="create-output", persist_result=False)
def create_output_task(plan: VectorizePlan) -> str:
    return create_output(plan, current_config().storage_options_for(plan.output_dir))


@task(name="polygonize", task_run_name="polygonize-{job.name}", **cached())
@reporting
def polygonize_task(job: PolygonizeJob, settings: VectorizeSettings, generation: str) -> PolygonizeSummary:
    config = current_config()
    args = (job, settings, config.storage_options_for(job.store.uri))
    if config.process_pool and config.task_runner == "threads":
        return run_in_process(polygonize_block, *args, workers=config.max_workers)
    return polygonize_block(*args)


@task(name="merge-parquet", **cached())
@reporting
def merge_parquet_task(plan: VectorizePlan, parts: list[str], generation: str) -> MergeSummary:
    return merge_parts(plan, parts, current_config().storage_options_for(plan.result_uri))

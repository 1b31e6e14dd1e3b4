"""Tasks of vectorize-mosaic: plan-partitions, create-output, polygonize, merge-parquet.

polygonize and merge-parquet are cached across runs. Their keys are the block
key (which hashes the parameters, the input stores' generations and the
code), the output folder's generation and the code fingerprint: an identical
call, or a re-run after a crash, skips every block already polygonized, and a
deleted output folder gets a new generation and so no stale hits.

polygonize holds the GIL (GDAL through rasterio, scipy), so with the thread
task runner it runs in the engine's process pool (config ``process_pool``):
the task's thread waits, the block uses a core of its own.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from ..config import current_config
from ..engine import vectorize as engine
from ..engine.processes import run_in_process
from ..engine.fingerprint import code_fingerprint
from ..params import VectorizeMosaicParams


@task(name="plan-partitions", persist_result=False)
def plan_blocks(params: VectorizeMosaicParams, output_root: str) -> engine.VectorizePlan:
    return engine.plan_vectorize(params, output_root, current_config().storage_options_for)


@task(name="create-output", persist_result=False)
def create_output_task(plan: engine.VectorizePlan) -> str:
    return engine.create_output(plan, current_config().storage_options_for(plan.output_dir))


def _polygonize_cache_key(context, parameters: dict[str, Any]) -> str:
    job: engine.BlockJob = parameters["job"]
    return f"polygonize-{job.key}-{parameters['generation']}-{code_fingerprint()}"


@task(
    name="polygonize",
    task_run_name="polygonize-{job.name}",
    cache_key_fn=_polygonize_cache_key,
    persist_result=True,
    result_serializer="json",
)
def polygonize(job: engine.BlockJob, settings: engine.VectorizeSettings, generation: str) -> dict[str, Any]:
    config = current_config()
    args = (job, settings, config.storage_options_for(job.store.uri))
    if config.process_pool and config.task_runner == "threads":
        return run_in_process(engine.polygonize_block, *args, workers=config.max_workers)
    return engine.polygonize_block(*args)


def _merge_cache_key(context, parameters: dict[str, Any]) -> str:
    plan: engine.VectorizePlan = parameters["plan"]
    return f"merge-parquet-{plan.request_id}-{parameters['generation']}-{code_fingerprint()}"


@task(name="merge-parquet", cache_key_fn=_merge_cache_key, persist_result=True, result_serializer="json")
def merge_parquet(plan: engine.VectorizePlan, parts: list[str], generation: str) -> dict[str, Any]:
    return engine.merge_parts(plan, parts, current_config().storage_options_for(plan.result_uri))

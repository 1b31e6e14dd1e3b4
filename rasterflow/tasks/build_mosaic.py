"""Tasks of build-mosaic: search-catalog, plan-partitions, create-store, build-shard,
commit-store, write-index.

As in build-gti-mosaic, build-shard is the only task cached across runs: its key
is the partition key (which fingerprints the request, the scenes found and the
AOI), the store generation and the code fingerprint. create-store and
commit-store are build-gti-mosaic's own tasks: same store contract.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from ..config import current_config
from ..engine import dataset_mosaic as engine
from ..engine.composite import CompositeJob, build_composite_shard
from ..engine.fingerprint import code_fingerprint
from ..engine.index import write_index
from ..params import BuildMosaicParams


@task(name="search-catalog", persist_result=False)
def search_catalog(params: BuildMosaicParams) -> engine.SceneIndex:
    config = current_config()
    return engine.search_catalog(params, config.datasets, config.storage_options_for)


@task(name="plan-partitions", persist_result=False)
def plan_partitions(params: BuildMosaicParams, found: engine.SceneIndex, output_root: str) -> engine.DatasetMosaicPlan:
    return engine.plan_dataset_mosaic(params, found, output_root, current_config().storage_options_for)


def _shard_cache_key(context, parameters: dict[str, Any]) -> str:
    job: CompositeJob = parameters["job"]
    return f"build-mosaic-shard-{job.key}-{parameters['generation']}-{code_fingerprint()}"


@task(
    name="build-shard",
    task_run_name="build-shard-{job.key}",
    cache_key_fn=_shard_cache_key,
    persist_result=True,
    result_serializer="json",
)
def build_shard(job: CompositeJob, generation: str) -> dict[str, Any]:
    return build_composite_shard(job, current_config().storage_options_for)


@task(name="write-index", persist_result=False)
def write_index_task(plan: engine.DatasetMosaicPlan) -> str:
    uri = plan.index_uri
    return write_index(engine.index_rows(plan), uri, current_config().storage_options_for(uri))

"""Tasks of the mosaic workflows: plan-partitions, create-store, build-shard,
commit-store, write-index.

build-shard is the only task with a cross-run cache: its key is the partition
key (which fingerprints the request and its input files), the store generation
and the code fingerprint, never the run id. A second identical run, or a re-run
after a crash, therefore skips every partition already written.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from ..config import current_config
from ..engine import mosaic as engine
from ..engine.fingerprint import code_fingerprint
from ..engine.index import write_index
from ..engine.store import commit_store, create_store
from ..params import BuildGtiMosaicParams


@task(name="plan-partitions", persist_result=False)
def plan_partitions(params: BuildGtiMosaicParams, output_root: str) -> engine.MosaicPlan:
    config = current_config()
    return engine.plan_gti_mosaic(params, output_root, config.storage_options_for)


@task(name="create-store", persist_result=False)
def create_store_task(store: engine.StorePlan, provenance: dict[str, Any]) -> str:
    config = current_config()
    return create_store(store.spec, store.fingerprint, provenance, config.storage_options_for(store.spec.uri))


def _shard_cache_key(context, parameters: dict[str, Any]) -> str:
    job: engine.ShardJob = parameters["job"]
    return f"build-shard-{job.key}-{parameters['generation']}-{code_fingerprint()}"


@task(
    name="build-shard",
    task_run_name="build-shard-{job.key}",
    cache_key_fn=_shard_cache_key,
    persist_result=True,
    result_serializer="json",
)
def build_shard(job: engine.ShardJob, generation: str) -> dict[str, Any]:
    config = current_config()
    return engine.build_shard(job, config.storage_options_for)


@task(name="commit-store", persist_result=False)
def commit_store_task(uri: str) -> str:
    commit_store(uri, current_config().storage_options_for(uri))
    return uri


@task(name="write-index", persist_result=False)
def write_index_task(plan: engine.MosaicPlan) -> str:
    uri = plan.index_uri
    return write_index(engine.index_rows(plan), uri, current_config().storage_options_for(uri))

"""Tasks of build-zarr-multiscales: plan-partitions, create-store, build-shard,
build-levels, count-shard, merge-statistics, commit-store, write-index.

build-shard, build-levels and count-shard are cached across runs: the key is
the partition (or chain) key (which fingerprints the request and its input
stores), the generations of the level stores written, the histogram bins the
task counts into, and the code fingerprint; never the run id. An identical call, or a re-run after a crash, skips every
partition already written.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from ..config import current_config
from ..engine import multiscales as engine
from ..engine.fingerprint import code_fingerprint, stable_hash
from ..engine.index import write_index
from ..engine.stats import Bins
from ..params import BuildZarrMultiscalesParams


@task(name="plan-partitions", persist_result=False)
def plan_partitions(params: BuildZarrMultiscalesParams, output_root: str) -> engine.MultiscalesPlan:
    return engine.plan_multiscales(params, output_root, current_config().storage_options_for)


@task(name="create-store", task_run_name="create-store-{pyramid.fingerprint:.12}", persist_result=False)
def create_pyramid_task(pyramid: engine.PyramidPlan, provenance: dict[str, Any]) -> dict[str, str]:
    """The root group and every level's store; returns their generations by URI."""
    return engine.create_pyramid(pyramid, provenance, current_config().storage_options_for(pyramid.uri))


def _bins_digest(bins: list[Bins | None] | None) -> str:
    return "none" if bins is None else stable_hash([b.model_dump() if b else None for b in bins], 16)


def _shard_cache_key(context, parameters: dict[str, Any]) -> str:
    job: engine.LevelJob = parameters["job"]
    bins = _bins_digest(parameters.get("bins"))
    return f"{context.task.name}-{job.key}-{parameters['generation']}-{bins}-{code_fingerprint()}"


@task(
    name="build-shard",
    task_run_name="build-shard-{job.key}",
    cache_key_fn=_shard_cache_key,
    persist_result=True,
    result_serializer="json",
)
def build_shard(job: engine.LevelJob, generation: str, bins: list[Bins | None] | None = None) -> dict[str, Any]:
    return engine.build_level_shard(job, bins, current_config().storage_options_for)


def _chain_cache_key(context, parameters: dict[str, Any]) -> str:
    chain: engine.LevelChain = parameters["chain"]
    return f"{context.task.name}-{chain.key}-{stable_hash(parameters['generations'], 16)}-{code_fingerprint()}"


@task(
    name="build-levels",
    task_run_name="build-levels-{chain.key}",
    cache_key_fn=_chain_cache_key,
    persist_result=True,
    result_serializer="json",
)
def build_levels(chain: engine.LevelChain, generations: list[str]) -> dict[str, Any]:
    return engine.build_level_chain(chain, current_config().storage_options_for)


@task(
    name="count-shard",
    task_run_name="count-shard-{job.key}",
    cache_key_fn=_shard_cache_key,
    persist_result=True,
    result_serializer="json",
)
def count_shard(job: engine.LevelJob, generation: str, bins: list[Bins | None] | None) -> dict[str, Any]:
    return engine.count_level_shard(job, bins, current_config().storage_options_for)


@task(name="merge-statistics", persist_result=False)
def merge_statistics(pyramid: engine.PyramidPlan, results: list[dict[str, Any]]) -> engine.PyramidStatistics:
    return engine.merge_moments(pyramid, results)


@task(name="commit-store", task_run_name="commit-store-{pyramid.fingerprint:.12}", persist_result=False)
def commit_pyramid_task(pyramid: engine.PyramidPlan, results: list[dict[str, Any]]) -> str:
    """Statistics from every partition's summary, then the commit."""
    bands = engine.band_statistics(pyramid, engine.merge_moments(pyramid, results), results)
    engine.commit_pyramid(pyramid, bands, current_config().storage_options_for(pyramid.uri))
    return pyramid.uri


@task(name="write-index", persist_result=False)
def write_index_task(plan: engine.MultiscalesPlan) -> str:
    uri = plan.index_uri
    return write_index(engine.index_rows(plan), uri, current_config().storage_options_for(uri))

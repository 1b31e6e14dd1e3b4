"""Tasks of build-mosaic: search-catalog, plan-partitions and build-shard (the store tasks are
build-gti-mosaic's, in ``tasks.stores``: same store contract).

As in build-gti-mosaic, build-shard is the only task cached across runs: its
key is the partition key (which fingerprints the request, the scenes found and
the AOI), the store generation and the code fingerprint.
"""

from __future__ import annotations

from prefect import task

from ..config import current_config
from ..engine.build_mosaic.composite import CompositeJob
from ..engine.build_mosaic.plan import DatasetMosaicPlan, plan_dataset_mosaic
from ..engine.build_mosaic.request import BuildMosaicRequest
from ..engine.build_mosaic.search import SceneIndex, search_catalog
from ..engine.build_mosaic.shard import CompositeSummary, build_composite_shard
from .policy import cached, reporting


@task(name="search-catalog", persist_result=False)
def search_catalog_task(request: BuildMosaicRequest) -> SceneIndex:
    config = current_config()
    return search_catalog(request, config.datasets, config.storage_options_for)


@task(name="plan-partitions", persist_result=False)
def plan_partitions(request: BuildMosaicRequest, found: SceneIndex, output_root: str) -> DatasetMosaicPlan:
    return plan_dataset_mosaic(request, found, output_root, current_config().storage_options_for)


@task(name="build-shard", task_run_name="build-shard-{job.key}", **cached())
@reporting
def build_shard_task(job: CompositeJob, generation: str) -> CompositeSummary:
    return build_composite_shard(job, current_config().storage_options_for)

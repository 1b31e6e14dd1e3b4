"""Tasks of build-zarr-multiscales: plan-partitions, create-store, build-shard, build-levels,
count-shard, merge-statistics, commit-store (write-index is in ``tasks.stores``).

build-shard, build-levels and count-shard are cached across runs
(``policy.WorkKey``): the key is the partition (or chain) key (which
fingerprints the request and its input stores), the generations of the level
stores written, the histogram bins the task counts into, and the code
fingerprint; never the run id. An identical call, or a re-run after a crash,
skips every partition already written.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from ..config import current_config
from ..engine.build_zarr_multiscales.levels import (
    LevelSummary,
    build_level_chain,
    build_level_shard,
    count_level_shard,
)
from ..engine.build_zarr_multiscales.plan import (
    LevelChain,
    LevelJob,
    MultiscalesPlan,
    PyramidPlan,
    plan_multiscales,
)
from ..engine.build_zarr_multiscales.pyramid import commit_pyramid, create_pyramid
from ..engine.build_zarr_multiscales.request import BuildZarrMultiscalesRequest
from ..engine.build_zarr_multiscales.statistics import PyramidStatistics, band_statistics, merge_moments
from ..engine.build_zarr_multiscales.stats import Bins
from .checks import planned
from .policy import cached, reporting


@task(name="plan-partitions", persist_result=False)
def plan_partitions(request: BuildZarrMultiscalesRequest, output_root: str) -> MultiscalesPlan:
    return planned("build-zarr-multiscales", request, output_root,
                   lambda: plan_multiscales(request, output_root, current_config().storage_options_for))


@task(name="create-store", task_run_name="create-store-{pyramid.fingerprint:.12}", persist_result=False)
def create_pyramid_task(pyramid: PyramidPlan, provenance: dict[str, Any]) -> dict[str, str]:
    """The root group and every level's store; returns their generations by URI."""
    return create_pyramid(pyramid, provenance, current_config().storage_options_for(pyramid.uri))


@task(name="build-shard", task_run_name="build-shard-{job.key}", **cached())
@reporting
def build_shard_task(job: LevelJob, generation: str, bins: list[Bins | None] | None = None) -> LevelSummary:
    return build_level_shard(job, bins, current_config().storage_options_for)


@task(name="build-levels", task_run_name="build-levels-{chain.key}", **cached())
@reporting
def build_levels_task(chain: LevelChain, generations: list[str]) -> LevelSummary:
    return build_level_chain(chain, current_config().storage_options_for)


@task(name="count-shard", task_run_name="count-shard-{job.key}", **cached())
@reporting
def count_shard_task(job: LevelJob, generation: str, bins: list[Bins | None] | None) -> LevelSummary:
    return count_level_shard(job, bins, current_config().storage_options_for)


@task(name="merge-statistics", persist_result=False)
def merge_statistics_task(pyramid: PyramidPlan, results: list[LevelSummary]) -> PyramidStatistics:
    return merge_moments(pyramid, results)


@task(name="commit-store", task_run_name="commit-store-{pyramid.fingerprint:.12}", persist_result=False)
def commit_pyramid_task(pyramid: PyramidPlan, results: list[LevelSummary]) -> str:
    """Statistics from every partition's summary, then the commit."""
    bands = band_statistics(pyramid, merge_moments(pyramid, results), results)
    commit_pyramid(pyramid, bands, current_config().storage_options_for(pyramid.uri))
    return pyramid.uri

"""build-zarr-multiscales: a store (or an index of stores) to overview pyramids.

plan-partitions -> create-store (the root group, then one store per level) ->
build-shard for level 0 (a copy, summarized) -> merge-statistics (which fixes
the histogram bins) -> build-shard for level 1 (which counts level 0 into the
bins; count-shard does it for pyramids of one level) -> build-shard for each
further level, from the level before -> commit-store (levels, then the root,
last) -> write-index. A level starts when the level before it is written.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from ..config import current_config
from ..enums import ResamplingMethod
from ..params import BuildZarrMultiscalesParams
from ..tasks.multiscales import (
    build_shard,
    commit_pyramid_task,
    count_shard,
    create_pyramid_task,
    merge_statistics,
    plan_partitions,
    write_index_task,
)
from ..tasks.policy import io_task_options
from ..tasks.publish import publish_stores
from .runtime import wait_reporting


@flow(name="build-zarr-multiscales", validate_parameters=True, persist_result=True)
def build_zarr_multiscales_flow(
    store: str,
    levels: int | None = None,
    resampling: ResamplingMethod | dict[str, ResamplingMethod] | None = None,
) -> str:
    """Build one multiscales store per input store; returns the index GeoParquet URI."""
    params = BuildZarrMultiscalesParams.parse(store=store, levels=levels, resampling=resampling)
    config = current_config()
    logger = get_run_logger()
    plan = plan_partitions(params, config.output_uri)
    logger.info("%d pyramid(s) of up to %d level(s) under %s", len(plan.pyramids), plan.n_levels, plan.output_dir)

    options = io_task_options(config)
    creating = [create_pyramid_task.with_options(**options).submit(p, plan.provenance) for p in plan.pyramids]
    generations = {uri: gen for created in wait_reporting(creating, "stores") for uri, gen in created.items()}
    shard_task, count_task = build_shard.with_options(**options), count_shard.with_options(**options)

    def run_level(level: int, submit) -> dict[str, list]:
        futures = {p.uri: [submit(p, job) for job in p.levels[level].jobs]
                   for p in plan.pyramids if level < len(p.levels)}
        wait_reporting([f for fs in futures.values() for f in fs], f"level {level}")
        return {uri: [f.result() for f in fs] for uri, fs in futures.items()}

    summaries = run_level(0, lambda p, job: shard_task.submit(job, generations[job.store_uri]))
    statistics = {p.uri: merge_statistics(p, summaries[p.uri]) for p in plan.pyramids}
    # Level 1 reads all of level 0 anyway, so it counts the histograms; lone level 0s are re-read.
    counts = run_level(1, lambda p, job: shard_task.submit(job, generations[job.store_uri], statistics[p.uri].bins))
    single = [p for p in plan.pyramids if len(p.levels) == 1]
    if single:
        futures = {p.uri: [count_task.submit(job, generations[job.store_uri], statistics[p.uri].bins)
                           for job in p.levels[0].jobs] for p in single}
        wait_reporting([f for fs in futures.values() for f in fs], "histograms")
        counts |= {uri: [f.result() for f in fs] for uri, fs in futures.items()}
    for level in range(2, plan.n_levels):
        run_level(level, lambda p, job: shard_task.submit(job, generations[job.store_uri]))

    for pyramid in plan.pyramids:
        commit_pyramid_task.with_options(**options)(pyramid, statistics[pyramid.uri], counts[pyramid.uri])
    index_uri = write_index_task.with_options(**options)(plan)
    jobs = sum(len(lvl.jobs) for p in plan.pyramids for lvl in p.levels)
    publish_stores(
        "build-zarr-multiscales", index_uri,
        f"# build-zarr-multiscales\n\nIndex: `{index_uri}`\n\n{len(plan.pyramids)} store(s), "
        f"up to {plan.n_levels} level(s), {jobs} partition(s).",
    )
    return index_uri

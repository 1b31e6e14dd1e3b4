"""build-zarr-multiscales: a store (or an index of stores) to overview pyramids.

plan-partitions -> create-store (the root group, then one store per level) ->
build-shard for level 0 (a copy, or a decode) and level 1 (from level 0, or
from the input when level 0 is its copy: then beside it, each level-1 task
copying the level-0 shards under it) -> build-shard for the other levels of
several partitions, each from the level before -> build-levels for the last
levels of one partition each (a chain: one read, halved in memory) ->
commit-store (statistics merged; levels, then the root, last) -> write-index.
engine.multiscales.build_pyramid is the same order without Prefect.

Statistics come with the reads above for 8- and 16-bit integers (per-value
counts). Other types take two passes: level 0's moments fix the histogram bins
(merge-statistics) before level 1 counts into them; a pyramid of one level
gets a count-shard pass over level 0 instead.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from ..config import current_config
from ..enums import ResamplingMethod
from ..params import BuildZarrMultiscalesParams
from ..tasks.multiscales import (
    build_levels,
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
    chain_task = build_levels.with_options(**options)
    results: dict[str, list[dict]] = {p.uri: [] for p in plan.pyramids}
    bins: dict[str, list] = {}

    def run(label: str, submissions: list[tuple[str, Any]]) -> None:
        """Wait for (pyramid URI, future) pairs; their results join the pyramid's."""
        wait_reporting([f for _, f in submissions], label)
        for uri, future in submissions:
            results[uri].append(future.result())

    def generation(job) -> str:
        """Of every store the job writes: a level 0 replaced under a cached level 1 is copied again."""
        return "+".join(generations[j.store_uri] for j in [job, *job.copies])

    def level_jobs(level: int, pyramids) -> list[tuple[str, Any]]:
        """Submit a level's partitions; level 1 counts level 0 into the bins, where there are any."""
        return [(p.uri, shard_task.submit(job, generation(job), bins.get(p.uri) if level == 1 else None))
                for p in pyramids for job in p.levels[level].jobs]

    # Level 0 (unless level 1 copies it), with level 1 beside it where level 1 needs neither
    # level 0's copy nor its bins.
    beside = [p for p in plan.pyramids if p.level1_reads_input and not p.needs_bins]
    run("levels 0 and 1" if beside else "level 0",
        level_jobs(0, [p for p in plan.pyramids if not p.level0_folded]) + level_jobs(1, beside))
    after = [p for p in plan.pyramids if len(p.levels) > 1 and p.uri not in {b.uri for b in beside}]
    for p in plan.pyramids:
        if p.needs_bins:
            bins[p.uri] = merge_statistics(p, results[p.uri]).bins
    if after:
        run("level 1", level_jobs(1, after))
    counting = [p for p in plan.pyramids if p.needs_count_pass]
    if counting:
        run("histograms", [(p.uri, count_task.submit(job, generations[job.store_uri], bins.get(p.uri)))
                           for p in counting for job in p.levels[0].jobs])
    for level in range(2, plan.n_levels):
        if any(level < p.tail_start for p in plan.pyramids):
            run(f"level {level}", level_jobs(level, [p for p in plan.pyramids if level < p.tail_start]))
    chains = [(p.uri, chain) for p in plan.pyramids for chain in p.tail]
    if chains:
        run("last levels", [(uri, chain_task.submit(chain, [generations[job.store_uri] for job in chain.jobs]))
                            for uri, chain in chains])

    for pyramid in plan.pyramids:
        commit_pyramid_task.with_options(**options)(pyramid, results[pyramid.uri])
    index_uri = write_index_task.with_options(**options)(plan)
    jobs = sum(len(lvl.jobs) for p in plan.pyramids for lvl in p.levels)
    publish_stores(
        "build-zarr-multiscales", index_uri,
        f"# build-zarr-multiscales\n\nIndex: `{index_uri}`\n\n{len(plan.pyramids)} store(s), "
        f"up to {plan.n_levels} level(s), {jobs} partition(s).",
    )
    return index_uri

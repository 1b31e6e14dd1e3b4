"""build-zarr-multiscales: a store (or an index of stores) to overview pyramids.

plan-partitions -> create-store (the root group, then one store per level) ->
the stages of ``engine.build_zarr_multiscales.stages`` (the one build order,
which the engine-only ``build_pyramids`` walks too): build-shard for level 0
(a copy, or a decode) and the levels of several partitions, count-shard for
histograms, build-levels for the last levels as chains, and merge-statistics
where histogram bins must come from level 0's moments first -> commit-store
(statistics merged; levels, then the root, last) -> write-index. The answer
is the multiscales store for a store, the index for an index of stores.
"""

from __future__ import annotations

from prefect import Task, flow, get_run_logger

from ..config import RunConfig, current_config
from ..engine.build_zarr_multiscales.levels import LevelSummary
from ..engine.build_zarr_multiscales.plan import LevelChain, LevelJob
from ..engine.build_zarr_multiscales.request import BuildZarrMultiscalesRequest
from ..engine.build_zarr_multiscales.stages import Work, stages
from ..engine.build_zarr_multiscales.stats import Bins
from ..engine.plan import PlanReport
from ..engine.view import map_link
from ..enums import ResamplingMethod
from ..tasks.build_zarr_multiscales import (
    build_levels_task,
    build_shard_task,
    commit_pyramid_task,
    count_shard_task,
    create_pyramid_task,
    merge_statistics_task,
    plan_partitions,
)
from ..tasks.policy import io_task_options
from ..tasks.publish import publish_stores
from ..tasks.stores import write_index_task
from .runtime import announce_run, request_arguments, run_configuration, wait_reporting


@flow(name="build-zarr-multiscales", validate_parameters=True, persist_result=True)
def build_zarr_multiscales_flow(
    store: str,
    levels: int | None = None,
    resampling: ResamplingMethod | dict[str, ResamplingMethod] | None = None,
    run_config: RunConfig | None = None,
) -> str:
    """Build one multiscales store per input store; returns it (a store given), or an index of them."""
    request = BuildZarrMultiscalesRequest.parse(**request_arguments(locals()))
    config = run_configuration(run_config)
    announce_run()
    plan = plan_partitions(request, config.output_uri)
    get_run_logger().info("%d pyramid(s) of up to %d level(s) under %s", len(plan.pyramids),
                          max(len(p.levels) for p in plan.pyramids), plan.output_dir)

    options = io_task_options(config)
    creating = [create_pyramid_task.with_options(**options).submit(p, plan.provenance) for p in plan.pyramids]
    generations = {uri: gen for created in wait_reporting(creating, "stores") for uri, gen in created.items()}
    tasks: dict[str, Task[..., LevelSummary]] = {"shard": build_shard_task.with_options(**options),
             "count": count_shard_task.with_options(**options),
             "chain": build_levels_task.with_options(**options)}
    results: dict[str, list[LevelSummary]] = {p.uri: [] for p in plan.pyramids}
    bins: dict[str, list[Bins | None]] = {}

    def submit(work: Work):
        job = work.job
        if isinstance(job, LevelChain):
            return tasks["chain"].submit(job, [generations[j.store_uri] for j in job.jobs])
        assert isinstance(job, LevelJob)
        # Of every store the job writes: a level 0 replaced under a cached level 1 is copied again.
        generation = "+".join(generations[j.store_uri] for j in [job, *job.copies])
        given = bins.get(work.pyramid.uri) if work.with_bins else None
        return tasks[work.kind].submit(job, generation, given)

    for stage in stages(plan.pyramids):
        done = wait_reporting([submit(work) for work in stage.work], stage.label)
        for work, result in zip(stage.work, done, strict=True):
            results[work.pyramid.uri].append(result)
        for pyramid in stage.bins_after:
            bins[pyramid.uri] = merge_statistics_task(pyramid, results[pyramid.uri]).bins

    for pyramid in plan.pyramids:
        commit_pyramid_task.with_options(**options)(pyramid, results[pyramid.uri])
    index_uri = write_index_task.with_options(**options)(plan)
    jobs = sum(len(lvl.jobs) for p in plan.pyramids for lvl in p.levels)
    map_url = map_link(index_uri, f"http://127.0.0.1:{config.view_port}")
    publish_stores(
        "build-zarr-multiscales", index_uri,
        f"# build-zarr-multiscales\n\nIndex: `{index_uri}`\n\n{len(plan.pyramids)} store(s), "
        f"up to {max(len(p.levels) for p in plan.pyramids)} level(s), {jobs} partition(s).\n\n"
        f"Map: [{map_url}]({map_url}) (served while `rasterflow server start` or "
        f"`rasterflow view {index_uri}` runs; `client.map_url(index)` starts it).",
    )
    return plan.answer()


def dry_run(request: BuildZarrMultiscalesRequest, workers: int) -> PlanReport:
    """The flow's plan, reported and not run (``RasterflowClient(dry_run=True)``)."""
    return plan_partitions.fn(request, current_config().output_uri).report(workers)

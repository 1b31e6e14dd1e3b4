"""predict-mosaic: a PyTorch model over mosaic stores, seamless and block by block.

plan-blocks (checks the stores, the device and the model with one probe
forward pass, and times a few batch sizes on a CPU) -> create-store (one per
input store) -> infer-block (one per group of neighbouring blocks and output
time slice, sized by the config's ``task_pixels``, cached; second-phase
groups wait for their first-phase neighbours, whose patch predictions they
reuse) -> remove-scratch -> commit-store -> write-index. A store is committed
only after all its groups succeeded; the index is written last.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture

from ..config import RunConfig, current_config
from ..engine.plan import PlanReport
from ..engine.predict_mosaic.bundled import bundled_model
from ..engine.predict_mosaic.group import BlockSummary
from ..engine.predict_mosaic.plan import patch_seconds
from ..engine.predict_mosaic.request import DEFAULT_BLOCK_MULTIPLIER, PredictMosaicRequest
from ..enums import InferenceActorEnum, MergeModeEnum
from ..tasks.policy import io_task_options
from ..tasks.predict_mosaic import (
    create_prediction_store_task,
    infer_block_task,
    plan_blocks,
    remove_scratch_task,
)
from ..tasks.publish import publish_stores
from ..tasks.stores import commit_store_task, write_index_task
from .runtime import announce_run, request_arguments, run_configuration, task_slots, wait_reporting


@flow(name="predict-mosaic", validate_parameters=True, persist_result=True)
def predict_mosaic_flow(
    store: str,
    model_path: str,
    patch_size: int,
    clip_size: int,
    features: list[str],
    labels: list[str],
    actor: InferenceActorEnum,
    max_batch_size: int,
    merge_mode: MergeModeEnum,
    device: str = "auto",
    select_labels: list[str] | None = None,
    xy_block_multiplier: int = DEFAULT_BLOCK_MULTIPLIER,
    output_xy_chunksize: int | None = None,
    run_config: RunConfig | None = None,
) -> str:
    """Predict every block of every input store; returns the index GeoParquet URI."""
    request = PredictMosaicRequest.parse(**request_arguments(locals()))
    config = run_configuration(run_config)
    announce_run()
    logger = get_run_logger()
    plan = plan_blocks(request, config.output_uri, task_slots(config))
    inputs = plan.provenance["inputs"]
    logger.info("%d store(s), %d block(s) in %d task(s) on %s, batches of %d, under %s", len(plan.stores),
                sum(len(job.blocks) for s in plan.stores for job in s.jobs), plan.n_jobs, inputs["device"],
                inputs["batch_size"], plan.output_dir)

    generations = {s.spec.uri: create_prediction_store_task(s, plan.provenance) for s in plan.stores}
    block_task = infer_block_task.with_options(**io_task_options(config))
    futures: list[PrefectFuture[BlockSummary]] = []
    for s in plan.stores:
        groups: dict[tuple[int, int, int], PrefectFuture[BlockSummary]] = {}
        for job in s.jobs:  # phase 0 first, so every neighbour a group waits for is already submitted
            t, (r, c) = job.output_time, job.group
            neighbours = [(t, r - 1, c), (t, r + 1, c), (t, r, c - 1), (t, r, c + 1)]
            wait_for = [groups[n] for n in neighbours if n in groups] if job.phase else []
            future = block_task.submit(job, generations[s.spec.uri], return_state=False, wait_for=wait_for)
            futures.append(future)
            groups[(t, r, c)] = future
    results = wait_reporting(futures, "groups")
    logger.info("%d patch(es) run, %d taken from a neighbouring block", sum(r.patches for r in results),
                sum(r.patches_taken for r in results))
    remove_scratch_task(plan)

    for s in plan.stores:
        commit_store_task(s.spec.uri)
    index_uri = write_index_task(plan)
    publish_stores(
        "predict-mosaic", index_uri,
        f"# predict-mosaic\n\nIndex: `{index_uri}`\n\nModel `{inputs['model_path']}` "
        f"(sha256 `{inputs['model_sha256'][:12]}`, {inputs['model_format']}"
        f"{': ' + shipped if (shipped := bundled_model(inputs['model_sha256'])) else ''}) "
        f"on `{inputs['device']}`; "
        f"{len(plan.stores)} store(s), {sum(r.blocks for r in results)} block(s) in {plan.n_jobs} task(s), "
        f"batches of {inputs['batch_size']} patches.",
    )
    return index_uri


def dry_run(request: PredictMosaicRequest, workers: int) -> PlanReport:
    """The flow's plan (model checked by its probe pass), reported and not run; the model is timed
    on one batch for the estimate (``RasterflowClient(dry_run=True)``)."""
    config = current_config()
    plan = plan_blocks.fn(request, config.output_uri)
    batch = plan.stores[0].jobs[0].spec.batch_size
    return plan.report(workers, patch_seconds(request, batch, config.storage_options_for))

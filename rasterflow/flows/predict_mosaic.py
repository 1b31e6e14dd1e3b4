"""predict-mosaic: a PyTorch model over mosaic stores, seamless and block by block.

plan-blocks (checks the stores, the device and the model with one probe
forward pass) -> create-store (one per input store) -> infer-block (one per
block and output time slice, cached; second-phase blocks wait for their
first-phase neighbours, whose patch predictions they reuse) -> remove-scratch
-> commit-store -> write-index. A store is committed only after all its
blocks succeeded; the index is written last.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture

from ..config import current_config
from ..engine.predict_mosaic.block import BlockSummary
from ..engine.predict_mosaic.bundled import bundled_model
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
from .runtime import announce_run, wait_reporting


@flow(name="predict-mosaic", validate_parameters=True, persist_result=True)
def predict_mosaic_flow(
    store: str,
    model_path: str,
    patch_size: int,
    clip_size: int,
    device: str,
    features: list[str],
    labels: list[str],
    actor: InferenceActorEnum,
    max_batch_size: int,
    merge_mode: MergeModeEnum,
    select_labels: list[str] | None = None,
    xy_block_multiplier: int = DEFAULT_BLOCK_MULTIPLIER,
    output_xy_chunksize: int | None = None,
) -> str:
    """Predict every block of every input store; returns the index GeoParquet URI."""
    request = PredictMosaicRequest.parse(**locals())
    announce_run()
    config = current_config()
    logger = get_run_logger()
    plan = plan_blocks(request, config.output_uri)
    device_used = plan.provenance["inputs"]["device"]
    logger.info("%d store(s), %d block(s) on %s under %s", len(plan.stores), plan.n_jobs, device_used,
                plan.output_dir)

    generations = {s.spec.uri: create_prediction_store_task(s, plan.provenance) for s in plan.stores}
    block_task = infer_block_task.with_options(**io_task_options(config))
    futures: list[PrefectFuture[BlockSummary]] = []
    sharing: dict[str, PrefectFuture[BlockSummary]] = {}
    for s in plan.stores:
        for job in s.jobs:  # phase 0 first, so every neighbour a job waits for is already submitted
            future = block_task.submit(job, generations[s.spec.uri], return_state=False,
                                       wait_for=[sharing[uri] for uri in job.take_from if uri in sharing])
            futures.append(future)
            if job.share_uri:
                sharing[job.share_uri] = future
    results = wait_reporting(futures, "blocks")
    logger.info("%d patch(es) run, %d taken from a neighbouring block", sum(r.patches for r in results),
                sum(r.patches_taken for r in results))
    remove_scratch_task(plan)

    for s in plan.stores:
        commit_store_task(s.spec.uri)
    index_uri = write_index_task(plan)
    inputs = plan.provenance["inputs"]
    publish_stores(
        "predict-mosaic", index_uri,
        f"# predict-mosaic\n\nIndex: `{index_uri}`\n\nModel `{inputs['model_path']}` "
        f"(sha256 `{inputs['model_sha256'][:12]}`, {inputs['model_format']}"
        f"{': ' + shipped if (shipped := bundled_model(inputs['model_sha256'])) else ''}) "
        f"on `{inputs['device']}`; "
        f"{len(plan.stores)} store(s), {plan.n_jobs} block(s).",
    )
    return index_uri

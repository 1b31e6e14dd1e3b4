"""Tasks of predict-mosaic: plan-blocks, create-store, infer-block, remove-scratch (commit-store and
write-index are in ``tasks.stores``).

infer-block (one per group of neighbouring blocks, sized by the config's
``task_pixels``) is the only task cached across runs: its key is the group's
key (which fingerprints the request, the model's bytes, the input stores and
the group's extent), the output store's generation and the code
fingerprint, never the run id. An identical call, or a re-run after a crash,
skips every group already written. A task runs its blocks on as many threads
as its worker has cores.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from ..config import current_config
from ..engine.predict_mosaic.group import BlockSummary, infer_group
from ..engine.predict_mosaic.plan import (
    InferBlockJob,
    PredictPlan,
    PredictStorePlan,
    create_prediction_store,
    plan_predict_mosaic,
)
from ..engine.predict_mosaic.request import PredictMosaicRequest
from ..engine.predict_mosaic.scratch import remove_scratch
from .checks import planned
from .policy import block_workers, cached, reporting


@task(name="plan-blocks", persist_result=False)
def plan_blocks(request: PredictMosaicRequest, output_root: str, slots: int = 1) -> PredictPlan:
    config = current_config()
    return planned("predict-mosaic", request, output_root,
                   lambda: plan_predict_mosaic(request, output_root, config.storage_options_for,
                                               config.task_pixels, slots),
                   layout=(config.task_pixels, slots))


@task(name="create-store", persist_result=False)
def create_prediction_store_task(store: PredictStorePlan, provenance: dict[str, Any]) -> str:
    return create_prediction_store(store, provenance, current_config().storage_options_for(store.spec.uri))


@task(name="infer-block", task_run_name="infer-block-{job.key}", **cached())
@reporting
def infer_block_task(job: InferBlockJob, generation: str) -> BlockSummary:
    config = current_config()
    return infer_group(job, config.storage_options_for, block_workers(config))


@task(name="remove-scratch", persist_result=False)
def remove_scratch_task(plan: PredictPlan) -> None:
    remove_scratch(plan.stores, current_config().storage_options_for)

"""Tasks of predict-mosaic: plan-blocks, create-store, infer-block, remove-scratch (commit-store and
write-index are in ``tasks.stores``).

infer-block is the only task cached across runs: its key is the block key
(which fingerprints the request, the model's bytes and the input stores), the
output store's generation and the code fingerprint, never the run id. An
identical call, or a re-run after a crash, skips every block already written.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from ..config import current_config
from ..engine.predict_mosaic.block import BlockSummary, infer_block
from ..engine.predict_mosaic.plan import (
    InferBlockJob,
    PredictPlan,
    PredictStorePlan,
    create_prediction_store,
    plan_predict_mosaic,
)
from ..engine.predict_mosaic.request import PredictMosaicRequest
from ..engine.predict_mosaic.scratch import remove_scratch
from .policy import cached, reporting


@task(name="plan-blocks", persist_result=False)
def plan_blocks(request: PredictMosaicRequest, output_root: str) -> PredictPlan:
    return plan_predict_mosaic(request, output_root, current_config().storage_options_for)


@task(name="create-store", persist_result=False)
def create_prediction_store_task(store: PredictStorePlan, provenance: dict[str, Any]) -> str:
    return create_prediction_store(store, provenance, current_config().storage_options_for(store.spec.uri))


@task(name="infer-block", task_run_name="infer-block-{job.key}", **cached())
@reporting
def infer_block_task(job: InferBlockJob, generation: str) -> BlockSummary:
    return infer_block(job, current_config().storage_options_for)


@task(name="remove-scratch", persist_result=False)
def remove_scratch_task(plan: PredictPlan) -> None:
    remove_scratch(plan.stores, current_config().storage_options_for)

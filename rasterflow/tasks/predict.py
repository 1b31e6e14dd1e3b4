"""Tasks of predict-mosaic: plan-blocks, create-store, infer-block, remove-scratch, commit-store,
write-index.

infer-block is the only task cached across runs: its key is the block key
(which fingerprints the request, the model's bytes and the input stores), the
output store's generation and the code fingerprint, never the run id. An
identical call, or a re-run after a crash, skips every block already written.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from ..config import current_config
from ..engine import predict as engine
from ..engine.fingerprint import code_fingerprint
from ..engine.index import write_index
from ..params import PredictMosaicParams


@task(name="plan-blocks", persist_result=False)
def plan_blocks(params: PredictMosaicParams, output_root: str) -> engine.PredictPlan:
    return engine.plan_predict_mosaic(params, output_root, current_config().storage_options_for)


@task(name="create-store", persist_result=False)
def create_prediction_store_task(store: engine.PredictStorePlan, provenance: dict[str, Any]) -> str:
    options = current_config().storage_options_for(store.spec.uri)
    return engine.create_prediction_store(store, provenance, options)


def _block_cache_key(context, parameters: dict[str, Any]) -> str:
    job: engine.BlockJob = parameters["job"]
    return f"infer-block-{job.key}-{parameters['generation']}-{code_fingerprint()}"


@task(
    name="infer-block",
    task_run_name="infer-block-{job.key}",
    cache_key_fn=_block_cache_key,
    persist_result=True,
    result_serializer="json",
)
def infer_block(job: engine.BlockJob, generation: str) -> dict[str, Any]:
    return engine.infer_block(job, current_config().storage_options_for)


@task(name="remove-scratch", persist_result=False)
def remove_scratch_task(plan: engine.PredictPlan) -> None:
    engine.remove_scratch(plan.stores, current_config().storage_options_for)


@task(name="write-index", persist_result=False)
def write_prediction_index(plan: engine.PredictPlan) -> str:
    uri = plan.index_uri
    return write_index(engine.index_rows(plan), uri, current_config().storage_options_for(uri))

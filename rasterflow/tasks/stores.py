"""Tasks every workflow that writes stores shares: create-store, commit-store, write-index.

A store is created (or adopted) before its partitions are built, committed
only after all of them succeeded, and the index listing the stores is
written last. They are cheap and never cached: they run on every call.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from ..config import current_config
from ..engine.index import write_index
from ..engine.plan import StorePlan, WorkflowPlan
from ..engine.store import commit_store, create_store


@task(name="create-store", persist_result=False)
def create_store_task(store: StorePlan, provenance: dict[str, Any]) -> str:
    """The store's metadata (or the store adopted as it is); returns its generation."""
    storage_options = current_config().storage_options_for(store.spec.uri)
    return create_store(store.spec, store.fingerprint, provenance, storage_options)


@task(name="commit-store", persist_result=False)
def commit_store_task(uri: str) -> str:
    commit_store(uri, current_config().storage_options_for(uri))
    return uri


@task(name="write-index", persist_result=False)
def write_index_task(plan: WorkflowPlan) -> str:
    """The plan's index GeoParquet, one row per output store."""
    uri = plan.index_uri
    return write_index(plan.index_rows(), uri, current_config().storage_options_for(uri))

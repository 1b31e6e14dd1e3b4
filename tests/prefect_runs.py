"""What the Prefect API says about the runs a test made."""

from __future__ import annotations

import time
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    TaskRunFilter,
    TaskRunFilterName,
)
from prefect.client.schemas.objects import Artifact, FlowRun, TaskRun
from prefect.client.schemas.sorting import FlowRunSort


def latest_flow_run(flow_name: str) -> FlowRun:
    """The flow run of ``flow_name`` that started last (tests run one flow at a time)."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                                     sort=FlowRunSort.START_TIME_DESC, limit=1)
    assert runs, f"no flow run of {flow_name}"
    return runs[0]


def task_runs(flow_run_id: UUID, name_prefix: str) -> list[TaskRun]:
    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=name_prefix)),
        )


def artifacts(flow_run_id: UUID) -> dict[str, list[Artifact]]:
    """The flow run's artifacts (its tasks' included) by type: table, markdown, progress."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    by_type: dict[str, list[Artifact]] = {}
    for artifact in found:
        by_type.setdefault(artifact.type, []).append(artifact)
    return by_type


def task_states(flow_name: str, prefix: str, timeout: float = 30.0) -> list[str]:
    """Sorted state names of the task runs named ``prefix...`` of the newest run of ``flow_name``.

    Prefect 3 records task runs and their states from events, a moment after
    the flow returns: this waits until every such run has a final state and
    their number held still over two looks (or ``timeout`` passed).
    """
    run_id = latest_flow_run(flow_name).id
    deadline = time.monotonic() + timeout
    seen = -1
    while True:
        runs = [t for t in task_runs(run_id, prefix) if t.name.startswith(prefix)]
        settled = all(t.state is not None and t.state.is_final() for t in runs) and len(runs) == seen
        if settled or time.monotonic() > deadline:
            return sorted(t.state.name if t.state else "None" for t in runs)
        seen = len(runs)
        time.sleep(0.25)

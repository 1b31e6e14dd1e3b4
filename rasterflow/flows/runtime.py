"""How a flow runs: its task runner, and progress as partitions finish."""

from __future__ import annotations

import logging
import time
from typing import Any
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
)
from prefect.task_runners import ThreadPoolTaskRunner

from ..config import OUTPUT_ENV_VAR, RUN_CONFIG, RasterflowConfig, RunConfig, activate, current_config
from ..engine.groups import default_workers
from ..engine.plan import StoresPlan
from ..errors import InvalidParameterError
from ..tasks import stores

# Progress for people watching a local run (the CLI attaches a handler);
# the Prefect UI gets the same numbers as a progress artifact.
progress_log = logging.getLogger("rasterflow.progress")
# Each artifact update is an API call from the flow's thread: at most one a second, and the last.
PROGRESS_INTERVAL_SECONDS = 1.0


def request_arguments(values: dict[str, Any]) -> dict[str, Any]:
    """A flow's arguments (its ``locals()``) as its request's fields: all but ``run_config``."""
    return {k: v for k, v in values.items() if k != RUN_CONFIG}


def run_configuration(run_config: RunConfig | None) -> RasterflowConfig:
    """This flow run's config: the caller's run keys (a deployment run's parameter) over this process's.

    Tasks read it too. A deployment run refuses a relative ``output_uri``: a
    process worker runs each flow in a temporary folder that it deletes
    afterwards, and a container's folder goes with the container, so the
    outputs, and the task cache under them, would be lost while the run
    reported them Completed.
    """
    config = current_config().with_run(run_config)
    relative = config.relative_output_uri
    if relative is not None and _deployment_run():
        raise InvalidParameterError(
            "output_uri", relative,
            "is relative, and a deployment run's working folder is temporary (a process worker deletes it "
            "after the run): its outputs and task cache would be lost",
            f"an absolute path or URI: output_uri in the caller's config (it reaches the run as "
            f"run_config.output_uri), or in the workers' rasterflow.yaml or {OUTPUT_ENV_VAR} "
            "(`rasterflow deploy --output-uri` sets it for every pool)",
        )
    if run_config is not None:
        activate(config)
    return config


def _deployment_run() -> bool:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return bool(context and context.flow_run and context.flow_run.deployment_id)


def make_task_runner(config: RasterflowConfig):
    workers = config.max_workers or default_workers()
    if config.task_runner == "dask":
        from .dask_runner import ConfiguredDaskTaskRunner

        if config.dask_address:
            return ConfiguredDaskTaskRunner(config, address=config.dask_address)
        cluster = {"n_workers": workers, "threads_per_worker": 1, "processes": True}
        return ConfiguredDaskTaskRunner(config, cluster_kwargs=cluster)
    return ThreadPoolTaskRunner(max_workers=workers)


def task_slots(config: RasterflowConfig) -> int:
    """How many tasks the flow's runner runs at once on separate workers: what groups must fill.

    The thread runner is one process whose tasks share one pool of block
    threads (``engine.groups``), so one task already uses every core: 1. On
    Dask, the threads of all workers of the cluster (asked of the scheduler),
    each running tasks of its own.
    """
    if config.task_runner != "dask":
        return 1
    from prefect.context import FlowRunContext
    from prefect_dask import DaskTaskRunner

    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    if isinstance(runner, DaskTaskRunner):
        return max(1, sum(runner.client.nthreads().values()))
    return config.max_workers or default_workers()


EMBEDDED_SERVER_STARTUP_SECONDS = 120


def run_settings(config: RasterflowConfig) -> dict[Any, Any]:
    """Prefect settings for one flow run in this process.

    Heartbeats are for workers; in-process they only add a ~1 s shutdown wait.
    With Dask and no ``PREFECT_API_URL``, the embedded server is started here and
    its URL set for the run: Prefect ships the run's settings with every task,
    and a worker process without an API URL starts an embedded server of its own
    (about 10 s per worker per run, all on one SQLite file). Remote workers
    cannot reach this loopback URL: clusters on other machines need a real
    server (``PREFECT_API_URL``).
    """
    settings: dict[Any, Any] = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}  # Setting -> value
    # Prefect waits 20 s for its embedded server; importing that server alone takes ~9 s of CPU on
    # a 2-core machine, so a loaded laptop timed out (measured): the call would fail, not wait.
    timeout = max(EMBEDDED_SERVER_STARTUP_SECONDS, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    settings[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = timeout
    if config.task_runner == "dask" and not PREFECT_API_URL.value():
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()
        server.start(timeout=timeout)
        settings[PREFECT_API_URL] = server.api_url
    return settings


def announce_run() -> None:
    """Say where people can watch this run (the command line prints it first): a top-level run's
    page in the Prefect UI, when the server has one (the embedded server's dies with the process)."""
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_UI_URL

    context, ui = FlowRunContext.get(), PREFECT_UI_URL.value()
    if context is None or context.flow_run is None or context.flow_run.parent_task_run_id or not ui:
        return
    url = f"{ui}/runs/flow-run/{context.flow_run.id}"
    progress_log.info("Prefect UI: %s", url, extra={"run_url": url})


def changed_settings(settings: dict[Any, Any]):
    """``temporary_settings(settings)``, or nothing when they are already in effect: building
    Prefect's settings again re-reads the environment (~0.3 s of CPU a call)."""
    from contextlib import nullcontext

    from prefect.settings import temporary_settings

    if all(setting.value() == value for setting, value in settings.items()):
        return nullcontext()
    return temporary_settings(settings)


def wait_reporting(futures: list, label: str) -> list:
    """The futures' results in their order, waited for as they finish with progress reported.

    Every future is waited for before raising the first failure, so no task is
    still writing when the flow reports it. A task whose ``wait_for`` upstream
    failed ends NotReady without running; the upstream's own error is the one
    raised.
    """
    total = len(futures)
    artifact_id = create_progress_artifact(progress=0.0, description=f"{label}: 0/{total}") if total else None
    assert artifact_id is None or isinstance(artifact_id, UUID)  # sync code: the sync implementation ran
    results: dict[int, Any] = {}
    failures = []
    position = {id(future): n for n, future in enumerate(futures)}
    reported = time.monotonic()
    for done, future in enumerate(as_completed(futures), start=1):
        future.wait()  # sets the final state; before it, .state asks the API, which lags (events)
        state = future.state
        if state.is_completed():
            results[position[id(future)]] = future.result()
        else:
            failures.append(future)
        progress_log.info("%s %d/%d", label, done, total,
                          extra={"done": done, "total": total, "label": label})
        due = done == total or time.monotonic() - reported >= PROGRESS_INTERVAL_SECONDS
        if artifact_id is not None and due:
            reported = time.monotonic()
            update_progress_artifact(artifact_id, progress=100.0 * done / total,
                                     description=f"{label}: {done}/{total}")
    if failures:
        # stable: first to fail
        failures.sort(key=lambda f: not (f.state.is_failed() or f.state.is_crashed()))
        failures[0].result()  # raises the task's own exception
    return [results[n] for n in range(total)]


def write_stores(plan: StoresPlan, shard_task, create_store_task=None) -> None:
    """Create every store of ``plan``, build its partitions with ``shard_task``, then commit.

    A store is committed only after all its partitions succeeded.
    """
    create = create_store_task or stores.create_store_task
    generations = {s.spec.uri: create(s, plan.provenance) for s in plan.stores}
    futures = [shard_task.submit(job, generations[s.spec.uri]) for s in plan.stores for job in s.jobs]
    wait_reporting(futures, "partitions")
    for store in plan.stores:
        stores.commit_store_task(store.spec.uri)

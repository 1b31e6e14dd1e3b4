"""How a flow runs: its task runner, and progress as partitions finish."""

from __future__ import annotations

import logging
import os

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from ..config import RasterflowConfig

# Progress for people watching a local run (the CLI attaches a handler);
# the Prefect UI gets the same numbers as a progress artifact.
progress_log = logging.getLogger("rasterflow.progress")


def make_task_runner(config: RasterflowConfig):
    workers = config.max_workers or os.cpu_count() or 1
    if config.task_runner == "dask":
        from .dask_runner import ConfiguredDaskTaskRunner

        if config.dask_address:
            return ConfiguredDaskTaskRunner(config, address=config.dask_address)
        cluster = {"n_workers": workers, "threads_per_worker": 1, "processes": True}
        return ConfiguredDaskTaskRunner(config, cluster_kwargs=cluster)
    return ThreadPoolTaskRunner(max_workers=workers)


def wait_reporting(futures: list, label: str) -> list:
    """Wait for ``futures`` as they finish, reporting progress; raise the first failure.

    Every future is waited for before raising, so no task is still writing when
    the flow reports its failure.
    """
    total = len(futures)
    artifact_id = create_progress_artifact(progress=0.0, description=f"{label}: 0/{total}") if total else None
    results, failures = [], []
    for done, future in enumerate(as_completed(futures), start=1):
        state = future.state
        if state.is_failed() or state.is_crashed():
            failures.append(future)
        else:
            results.append(future.result())
        progress_log.info("%s %d/%d", label, done, total, extra={"done": done, "total": total, "label": label})
        if artifact_id is not None:
            update_progress_artifact(artifact_id, progress=100.0 * done / total, description=f"{label}: {done}/{total}")
    if failures:
        failures[0].result()  # raises the task's own exception
    return results

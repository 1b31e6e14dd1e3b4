"""What every I/O task shares: which failures to retry, where results live.

Retries are for the world being flaky (a storage blip, a throttled request),
not for bad input: a ``RasterflowError`` that is not ``transient`` fails the task
at once, so a wrong band name does not sit through three back-offs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.tasks import exponential_backoff

from ..config import RasterflowConfig
from ..engine import uris
from ..errors import RasterflowError


def retry_transient(task, task_run, state) -> bool:
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, RasterflowError):
        return exc.transient
    return True


def result_storage(config: RasterflowConfig) -> Path | None:
    """Results (and so cache entries) next to the outputs, when they are local.

    Keeping them with the outputs means deleting an output folder also forgets
    its cache, and a shared output volume is a shared cache.
    """
    if uris.is_local(config.output_uri):
        return Path(uris.local_path(config.output_uri)) / ".prefect-results"
    return None


def io_task_options(config: RasterflowConfig) -> dict[str, Any]:
    options: dict[str, Any] = {
        "retries": config.retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=config.retry_delay_seconds)
        if config.retries else 0,
        "retry_jitter_factor": 0.5,
        "retry_condition_fn": retry_transient,
    }
    storage = result_storage(config)
    if storage is not None:
        options["result_storage"] = storage
    return options

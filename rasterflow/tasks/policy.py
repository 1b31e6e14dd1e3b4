"""What every task that does a request's work shares: its cache key, its retries, where results live.

Retries are for the world being flaky (a storage blip, a throttled request),
not for bad input: a ``RasterflowError`` that is not ``transient`` fails the task
at once, so a wrong band name does not sit through three back-offs.

The cache key is what a task computes, never the run it belongs to: an
identical call, or a rerun after a crash, finds what is already done.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.filesystems import RemoteFileSystem
from prefect.tasks import exponential_backoff
from pydantic import BaseModel

from ..config import RasterflowConfig, current_config
from ..engine import uris
from ..engine.groups import default_workers
from ..engine.plan import WorkflowPlan
from ..engine.provenance import code_fingerprint, stable_hash
from ..errors import is_transient

RESULTS_FOLDER = ".prefect-results"


def _identity(value: Any) -> Any:
    """What an input contributes to a cache key: a job's or a plan's own key, else its content."""
    if isinstance(value, WorkflowPlan):
        return value.request_id
    key = getattr(value, "key", None)
    if isinstance(key, str):
        return key
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [_identity(v) for v in value]
    return value


@dataclass
class WorkKey(CachePolicy):
    """The cache key of a task that does a request's work: task, job, other inputs, code.

    A job's key hashes the request, the identities of its inputs and the code
    that planned it; the other inputs (store generations, histogram bins) are
    hashed with the code fingerprint, so a replaced store or a changed engine
    never gets a stale hit. The run id is never part of it.
    """

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        identities = {name: _identity(value) for name, value in inputs.items()}
        label = next((v for v in identities.values() if isinstance(v, str)), "")[:40]
        digest = stable_hash([identities, code_fingerprint()], 16)
        return f"{task_ctx.task.name}-{label}-{digest}"


WORK_KEY = WorkKey()


def cached(**options: Any) -> dict[str, Any]:
    """Task decorator options of the cached tasks: the work key, results persisted as JSON."""
    return {"cache_policy": WORK_KEY, "persist_result": True, "result_serializer": "json"} | options


# How a summary's count fields read in a task's log line, in this order.
_FACTS = (("valid_values", "{:,} valid values"), ("valid_pixels", "{:,} valid pixels"),
          ("scenes", "{} scene(s) read"), ("patches", "{} patch(es) run"),
          ("patches_taken", "{} taken from a neighbour"), ("finished", "{:,} polygon(s) finished"),
          ("border", "{:,} piece(s) on the block's edges"), ("polygons", "{:,} polygon(s)"))

Result = TypeVar("Result")


def describe(summary: Any) -> str:
    """What a task's summary says it did, as words: ``228 x 281 px, 64,068 valid values, 0.4 MB``."""
    if not isinstance(summary, BaseModel):
        return ""
    values = dict(summary)
    facts = [f"{values['rows']} x {values['cols']} px"] if {"rows", "cols"} <= values.keys() else []
    for name, text in _FACTS:
        value = values.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            facts.append(text.format(value))
        elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            facts.append(text.format(sum(value)))
    if values.get("bytes"):
        facts.append(f"{values['bytes'] / 1e6:.1f} MB of pixels")
    if values.get("written") is False or values.get("part", "") is None:
        facts.append("nothing to write")
    return ", ".join(facts)


def reporting(fn: Callable[..., Result]) -> Callable[..., Result]:
    """A task body that logs what it did (its summary in words) and how long it took.

    Prefect's own line says only "Finished in state Completed()"; this one says what for: the
    pixels, polygons, patches and bytes of that partition. Cache hits never run it.
    """

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Result:
        from prefect import get_run_logger

        started = time.perf_counter()
        result = fn(*args, **kwargs)
        said = describe(result)
        get_run_logger().info("%s in %.2f s", said or "done", time.perf_counter() - started)
        return result

    return run


def retry_transient(task, task_run, state) -> bool:
    return is_transient(state.result(raise_on_failure=False))


class RasterflowResultStorage(RemoteFileSystem):
    """Task results at an fsspec URI, opened with the rasterflow config's storage options.

    Prefect 3.8 accepts only saved blocks as task result storage, and a saved
    ``RemoteFileSystem`` would keep its fsspec settings (endpoint, keys) in the
    Prefect database. This block saves only its ``basepath``; credentials are
    looked up in the config of the process that reads or writes, like every
    other storage access of rasterflow.
    """

    _block_type_name = "Rasterflow Result Storage"

    @property
    def filesystem(self):
        if not self._filesystem:
            options = current_config().storage_options_for(self.basepath)
            self._filesystem, _ = uris.filesystem(self.basepath, options)
        return self._filesystem


def result_storage(config: RasterflowConfig) -> Path | RasterflowResultStorage:
    """Results (and so cache entries) under ``<output_uri>/.prefect-results``.

    Keeping them with the outputs means deleting an output folder also forgets
    its cache, a shared output bucket or volume is a shared cache, and a rerun
    after a crash anywhere finds what finished. Local folders are plain paths;
    remote ones a block saved under a name derived from the URI (only the
    URI is saved), so every worker of the same output writes the same cache.
    """
    base = uris.join(config.output_uri, RESULTS_FOLDER)
    if uris.is_local(config.output_uri):
        return Path(uris.local_path(base))
    block = RasterflowResultStorage(basepath=base)
    block.save(f"rasterflow-results-{stable_hash(base, 16)}", overwrite=True)
    return block


def io_task_options(config: RasterflowConfig) -> dict[str, Any]:
    """Retries of transient failures, with back-off and jitter, and results next to the outputs."""
    return {
        "retries": config.retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=config.retry_delay_seconds)
        if config.retries else 0,
        "retry_jitter_factor": 0.5,
        "retry_condition_fn": retry_transient,
        "result_storage": result_storage(config),
    }


def block_workers(config: RasterflowConfig) -> int:
    """Threads for the blocks of one task: the cores this worker has.

    On a Dask worker, its own thread count (a cluster gives each worker its
    share of a machine); elsewhere ``max_workers``, else the cores this
    process may use.
    """
    try:
        from distributed import get_worker

        return get_worker().state.nthreads
    except (ImportError, ValueError):  # no distributed, or not on a Dask worker
        return config.max_workers or default_workers()

"""What every I/O task shares: which failures to retry, where results live.

Retries are for the world being flaky (a storage blip, a throttled request),
not for bad input: a ``RasterflowError`` that is not ``transient`` fails the task
at once, so a wrong band name does not sit through three back-offs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.filesystems import RemoteFileSystem
from prefect.tasks import exponential_backoff

from ..config import RasterflowConfig, current_config
from ..engine import uris
from ..engine.fingerprint import stable_hash
from ..errors import is_transient

RESULTS_FOLDER = ".prefect-results"


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
            self._filesystem, _ = uris.filesystem(self.basepath, current_config().storage_options_for(self.basepath))
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
    options: dict[str, Any] = {
        "retries": config.retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=config.retry_delay_seconds)
        if config.retries else 0,
        "retry_jitter_factor": 0.5,
        "retry_condition_fn": retry_transient,
    }
    options["result_storage"] = result_storage(config)
    return options

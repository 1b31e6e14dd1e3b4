"""A pool of worker processes for engine steps that hold the GIL.

GDAL's polygonize (through ``rasterio.features.shapes``) and scipy's
labelling keep the GIL for their whole run, so the threads of one process run
them one at a time: a thread task runner on N cores vectorizes at the speed
of one. Such steps run here instead, in worker processes started once per
process on first use and then kept, so later calls pay no start-up. Workers
start from a fork server (never a fork of the threaded caller) that has
imported the engine once.

Arguments and results cross the process boundary pickled: pass job
descriptions and URIs, never pixels (the worker reads its own block).

Like every process pool that does not fork (and Dask's local cluster), a
worker imports the caller's main script: a script that calls rasterflow at
its top level needs ``if __name__ == "__main__":``. ``importing_main`` lets
the client refuse such a call at once instead of running a flow in a worker.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from ..errors import RasterflowError

T = TypeVar("T")
_PRELOAD = ["rasterflow.engine.vectorize_mosaic.polygonize"]

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_workers = 0


def _executor(workers: int) -> ProcessPoolExecutor:
    global _pool, _pool_workers
    with _lock:
        if _pool is None or _pool_workers != workers:
            if _pool is not None:
                _pool.shutdown(wait=False, cancel_futures=False)
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(_PRELOAD)
            _pool, _pool_workers = ProcessPoolExecutor(max_workers=workers, mp_context=context), workers
        return _pool


def _forget(pool: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None


def _call(fn: Callable[..., T], args: tuple) -> tuple[bool, Any]:
    """In the worker: (True, result), or (False, an exception the caller can unpickle)."""
    try:
        return True, fn(*args)
    except Exception as exc:  # noqa: BLE001  (handed back to the caller, who raises it)
        try:
            pickle.loads(pickle.dumps(exc))
            return False, exc
        except Exception:  # noqa: BLE001  (an exception whose __init__ pickling cannot replay)
            error = RasterflowError(f"{type(exc).__name__}: {exc}")
            error.transient = bool(getattr(exc, "transient", False))
            return False, error


def importing_main() -> bool:
    """True while this process, a worker being started, imports the parent's main script."""
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def run_in_process(fn: Callable[..., T], *args: Any, workers: int | None = None) -> T:
    """``fn(*args)`` in a worker process; the calling thread waits without holding the GIL.

    ``fn`` must be importable (a module-level function). A worker that dies
    (killed for memory, say) breaks the pool: it is replaced on the next call,
    and this call fails with a transient error, so the task's retry runs it again.
    """
    pool = _executor(workers or os.cpu_count() or 1)
    try:
        ok, value = pool.submit(_call, fn, args).result()
    except BrokenProcessPool as exc:
        _forget(pool)
        error = RasterflowError(
            f"a worker process died while running {fn.__name__} ({exc}). If your script calls rasterflow at "
            'its top level, put the calls under `if __name__ == "__main__":` (workers import the script), '
            "or set process_pool: false in rasterflow.yaml"
        )
        error.transient = True
        raise error from None
    if not ok:
        raise value
    return value

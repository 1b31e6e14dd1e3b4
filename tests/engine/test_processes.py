"""The process pool for GIL-bound engine steps: results, errors and the caller's process."""

from __future__ import annotations

import os

import pytest

from rasterflow.engine.processes import importing_main, run_in_process
from rasterflow.errors import InputReadError, RasterflowError, StoreError


def fail_with(kind: str) -> None:
    """Module level, so a worker can import it by name."""
    if kind == "store":
        raise StoreError("s3://bucket/store.zarr: no such store")
    # __init__ pickling cannot replay
    raise InputReadError("s3://bucket/tile.tif", "connection reset", transient=True)


def test_runs_in_another_process_and_returns_the_result():
    assert run_in_process(os.getpid, workers=1) != os.getpid()
    assert run_in_process(divmod, 17, 5, workers=1) == (3, 2)
    assert not importing_main()


def test_errors_come_back_as_themselves_or_as_rasterflow_errors_keeping_transient():
    with pytest.raises(StoreError, match="no such store"):
        run_in_process(fail_with, "store", workers=1)
    # Unpicklable by default (its __init__ takes more than the message); a worker may have
    # registered exception pickling (tblib), else it comes back as a RasterflowError saying what it was.
    with pytest.raises(RasterflowError, match="s3://bucket/tile.tif: connection reset") as err:
        run_in_process(fail_with, "read", workers=1)
    assert err.value.transient

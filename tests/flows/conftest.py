"""Flow tests run against a real Prefect server (the test harness, on loopback)."""

from __future__ import annotations

import pytest

from rasterflow import RasterflowClient
from rasterflow.config import RasterflowConfig


@pytest.fixture(scope="session", autouse=True)
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    # The default 30 s start-up timeout is tight on a loaded 2-core machine.
    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def output_root(tmp_path):
    return tmp_path / "out"


@pytest.fixture
def client(output_root) -> RasterflowClient:
    return RasterflowClient(RasterflowConfig(output_uri=str(output_root), max_workers=2, retries=1, retry_delay_seconds=0.1))

"""Flow tests run against a real Prefect server (the test harness, on loopback)."""

from __future__ import annotations

import pytest

from rasterflow import RasterflowClient
from rasterflow.config import RasterflowConfig


@pytest.fixture(scope="session", autouse=True)
def _server(prefect_server):
    yield


@pytest.fixture
def output_root(tmp_path):
    return tmp_path / "out"


@pytest.fixture
def client(output_root) -> RasterflowClient:
    return RasterflowClient(RasterflowConfig(output_uri=str(output_root), max_workers=2, retries=1,
                                             retry_delay_seconds=0.1))

"""Test-session setup shared by every test.

Prefect keeps results and its database under PREFECT_HOME; pointing it at a
fresh directory before Prefect is imported keeps test sessions from reading
each other's (or the user's) cache.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="rasterflow-test-prefect-")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("RASTERFLOW_CONFIG_FILE", None)
os.environ.pop("RASTERFLOW_OUTPUT_URI", None)
# Background servers of `rasterflow server start` are recorded here: never the user's.
os.environ["RASTERFLOW_STATE_DIR"] = tempfile.mkdtemp(prefix="rasterflow-test-state-")

SAMPLES = Path(__file__).resolve().parents[1] / "rasterflow" / "samples"


@pytest.fixture(scope="session")
def landsat() -> Path:
    """Real Landsat-8 sample: 4 overlapping COG tiles, tiles.parquet, aoi.geojson."""
    return SAMPLES / "landsat8_iguazu"


@pytest.fixture(scope="session")
def haiti() -> Path:
    """Real 4-band RGBN sample: 2 COGs offset by a fraction of a pixel, two dates."""
    return SAMPLES / "haiti_rgbn"


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect API (the test harness: a temporary server on loopback)."""
    from prefect.testing.utilities import prefect_test_harness

    # The default 30 s start-up timeout is tight on a loaded 2-core machine (90 s was, at load 14).
    with prefect_test_harness(server_startup_timeout=240):
        yield


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """A real S3-compatible server (moto's server mode) on 127.0.0.1, for the session."""
    from s3_server import MotoServer

    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_proxy(moto_server):
    """The fault-injecting proxy in front of ``moto_server`` (faults off until a test turns them on)."""
    from s3_server import FaultProxy

    proxy = FaultProxy(moto_server.port, rate=0.2, seed=6)
    yield proxy
    proxy.stop()


from stac_fixtures import stac_api, stac_sample  # noqa: E402,F401  (session fixtures of the build_mosaic tests)

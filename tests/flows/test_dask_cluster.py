"""build-gti-mosaic on an existing Dask cluster: a `dask scheduler` and two
`dask worker` processes on loopback, as a platform team would run them.

The workers' own config lookup is broken on purpose (RASTERFLOW_CONFIG_FILE
names a missing file): tasks only work there if the client's config travels
with them. Which process ran each build-shard task is read from the workers'
logs, so a run that kept its tasks in the client process cannot pass.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import xarray as xr
from loopback import child_env, free_port, process, wait_until
from prefect.settings import PREFECT_API_URL
from prefect_runs import latest_flow_run, task_runs

from rasterflow import RasterflowClient
from rasterflow.config import RasterflowConfig

FINISHED = re.compile(r"Task run '(build-shard-[^']+)' - Finished in state Completed")


@pytest.fixture
def dask_cluster(tmp_path):
    """(scheduler address, worker log files) of a scheduler and two single-thread workers."""
    distributed = pytest.importorskip("distributed")
    address = f"tcp://127.0.0.1:{free_port()}"
    # INFO on the workers' console whatever this session set (the CLI tests quiet it): the logs are the
    # evidence.
    env = child_env(PREFECT_API_URL=PREFECT_API_URL.value(),
                    RASTERFLOW_CONFIG_FILE=str(tmp_path / "missing.yaml"),
                    PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="INFO", PREFECT_LOGGING_LEVEL="INFO")
    dask = [sys.executable, "-m", "dask"]
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    with process([*dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                  "--no-dashboard"], tmp_path / "scheduler.log", env) as scheduler, \
            process([*dask, "worker", address, "--name", "w0", "--nthreads", "1", "--no-nanny",
                     "--no-dashboard", "--host", "127.0.0.1"], logs[0], env), \
            process([*dask, "worker", address, "--name", "w1", "--nthreads", "1", "--no-nanny",
                     "--no-dashboard", "--host", "127.0.0.1"], logs[1], env):
        wait_until(lambda: b"Scheduler at" in (tmp_path / "scheduler.log").read_bytes(), 60, "dask scheduler",
                   scheduler)
        with distributed.Client(address, timeout=60) as dask_client:
            dask_client.wait_for_workers(2, timeout=90)
        yield address, logs


def _mosaic(config: RasterflowConfig, landsat: Path) -> np.ndarray:
    index = RasterflowClient(config).build_gti_mosaic(
        str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), ["red", "green"], "location",
        crs_epsg=32621, xy_chunksize=128, shard_size_bytes=256 * 256 * 4,
    )
    return xr.open_zarr(gpd.read_parquet(index).location[0])["variables"].values


def test_build_shard_tasks_run_on_the_workers_of_an_existing_cluster(dask_cluster, landsat, tmp_path):
    address, logs = dask_cluster
    on_cluster = RasterflowConfig(output_uri=str(tmp_path / "dask"), task_runner="dask", dask_address=address,
                                  retries=0)
    mosaic = _mosaic(on_cluster, landsat)
    shards = {t.name for t in task_runs(latest_flow_run("build-gti-mosaic").id, "build-shard-")}
    threads = RasterflowConfig(output_uri=str(tmp_path / "threads"), max_workers=2, retries=0)
    expected = _mosaic(threads, landsat)

    np.testing.assert_array_equal(mosaic, expected)
    assert (mosaic != 0).any()
    ran = [set(FINISHED.findall(log.read_text())) for log in logs]
    assert len(shards) >= 2
    assert ran[0] | ran[1] == shards  # every build-shard task ran on a worker, none in the client
